// A Node TOKEN authorizer for the tests: "allow" is allowed, "unauthorized" raises Lambda's
// Unauthorized error (API Gateway's 401), anything else is denied (403).
"use strict";

exports.handler = async (event) => {
  const token = event.authorizationToken;
  if (token === "unauthorized") {
    throw new Error("Unauthorized");
  }
  return {
    principalId: "node-user",
    policyDocument: {
      Version: "2012-10-17",
      Statement: [
        {
          Action: "execute-api:Invoke",
          Effect: token === "allow" ? "Allow" : "Deny",
          Resource: event.methodArn,
        },
      ],
    },
    context: { runtime: "node" },
  };
};

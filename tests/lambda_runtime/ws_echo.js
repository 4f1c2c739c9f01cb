// A Node WebSocket function for the tests: accepts connections, echoes a message's text.
"use strict";

exports.handler = async (event) => {
  const route = event.requestContext.routeKey;
  if (route === "$connect" || route === "$disconnect") {
    return { statusCode: 200 };
  }
  const body = JSON.parse(event.body || "{}");
  return {
    statusCode: 200,
    body: JSON.stringify({ route, echo: body.text, runtime: "node" }),
  };
};

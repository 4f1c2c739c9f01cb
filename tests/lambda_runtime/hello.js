// A Node handler answering with what it was sent, for the `lambda` integration tests.
"use strict";

exports.handler = async (event, context) => {
  const query = event.queryStringParameters || {};
  if (query.fail) {
    throw new Error("asked to fail");
  }
  if (query.sleep_ms) {
    await new Promise((resolve) => setTimeout(resolve, Number(query.sleep_ms)));
  }
  if (query.raw) {
    return "just a string";
  }
  return {
    statusCode: Number(query.status || 200),
    headers: { "content-type": "application/json", "x-runtime": "node " + process.version },
    body: JSON.stringify({
      version: event.version || "1.0",
      routeKey: event.routeKey || null,
      resource: event.resource || null,
      path: event.rawPath || event.path,
      body: event.body,
      isBase64Encoded: event.isBase64Encoded,
      stage: event.requestContext.stage,
      functionName: context.functionName,
      memory: context.memoryLimitInMB,
      greeting: process.env.GREETING || null,
    }),
  };
};

// Runs one Lambda invocation of a Node handler the way the Node.js runtime does: reads the event
// (JSON) on stdin, calls `exports.handler(event, context)` from the file named by argv[2], and
// writes the result as JSON on stdout. A thrown error is written as Lambda's error shape on
// stdout with exit status 1 (the Invoke API server turns that into X-Amz-Function-Error).
"use strict";
const path = require("path");

const [, , file, exportName = "handler"] = process.argv;
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const started = Date.now();
  const timeoutMs = Number(process.env.LAMBDA_TIMEOUT_MS || 3000);
  const context = {
    awsRequestId: process.env.LAMBDA_REQUEST_ID || "",
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME || "",
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || "128",
    getRemainingTimeInMillis: () => Math.max(0, timeoutMs - (Date.now() - started)),
  };
  try {
    const handler = require(path.resolve(file))[exportName];
    const result = await handler(JSON.parse(input), context);
    process.stdout.write(JSON.stringify(result === undefined ? null : result));
  } catch (err) {
    process.stdout.write(
      JSON.stringify({
        errorType: (err && err.name) || "Error",
        errorMessage: (err && err.message) || String(err),
      }),
    );
    process.exitCode = 1;
  }
});

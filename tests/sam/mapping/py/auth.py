def handler(event, context):
    return {"isAuthorized": event.get("headers", {}).get("x-secret") == "open sesame"}

"""WebSocket APIs: what stays WebSocket-specific once the runtime has compiled a mount's routes.

`api` (the integration a mount's `$default` route runs: upgrade, message loop, close codes),
`session` (one connection's state, idle and duration timer), `selection` (route selection),
`events` (AWS's WebSocket event format), `targets` (the function,
http_proxy and mock integrations as message routes run them), `telemetry` (metrics and access-log
lines), `connections` (live connections and the @connections API's callers) and `management`
(the @connections API as a route on the WebSocket listener).
"""

"""The Lua scripts wrk runs: what each measurement requests."""

from __future__ import annotations

from collections.abc import Sequence

PASSWORD = "bench-password-31415"  # every seeded user's (bench/database.py)
NEW_PASSWORD = "bench-password-27182"  # what the password-change runs set


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plain(method: str, path: str) -> str:
    return f"""
request = function()
  return wrk.format({lua_string(method)}, {lua_string(path)})
end
"""


def bearer_tokens(
    method: str, path: str, tokens: Sequence[str], body: str | None = None, once: bool = False
) -> str:
    """Bearer requests cycling through distinct users' access tokens (``once``: each token
    sent once, then "exhausted"), with ``body`` when given."""
    table = ",\n".join(lua_string(token) for token in tokens)
    step = "i = i + 1" if once else "i = i % #tokens + 1"
    rest = f", {lua_string(body)}" if body is not None else ""
    return f"""
local tokens = {{
{table}
}}
local i = 0
request = function()
  {step}
  local token = tokens[i] or "exhausted"
  return wrk.format({lua_string(method)}, {lua_string(path)},
    {{["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}}{rest})
end
"""


def admin_search(staff_token: str, users: int) -> str:
    """Staff search: half by a username fragment, half by a last-name fragment."""
    return f"""
local n = 0
math.randomseed(12345)
request = function()
  n = n + 1
  local term
  if n % 2 == 0 then
    term = "user" .. math.random(1, {users})
  else
    term = "ln" .. string.format("%06x", math.random(0, 16777215)):sub(1, 5)
  end
  return wrk.format("GET", "/api/v1/users?search=" .. term .. "&limit=20",
    {{["Authorization"] = "Bearer " .. {lua_string(staff_token)}}})
end
"""


def event_search(staff_token: str, users: int, addresses: int) -> str:
    """Staff's audit searches: half for one account's events, half for one address's."""
    return f"""
local n = 0
math.randomseed(4242)
request = function()
  n = n + 1
  local filter
  if n % 2 == 0 then
    filter = "user_id=" .. math.random(1, {users})
  else
    local a = math.random(0, {addresses} - 1)
    filter = "ip=10." .. math.floor(a / 250) .. "." .. (a % 250) .. ".1"
  end
  return wrk.format("GET", "/api/v1/events?limit=50&" .. filter,
    {{["Authorization"] = "Bearer " .. {lua_string(staff_token)}}})
end
"""


def login(users: int, start: int) -> str:
    """Log in as user<k> for k cycling through every seeded user (distinct accounts)."""
    return f"""
local k = {start}
request = function()
  k = k % {users} + 1
  local body = '{{"username":"user' .. k .. '","password":"{PASSWORD}"}}'
  return wrk.format("POST", "/api/v1/auth/token",
    {{["Content-Type"] = "application/json"}}, body)
end
"""


def register(prefix: str) -> str:
    """Register ``<prefix>x<k>`` (and its address) for k = 1, 2, ...: every one new."""
    return f"""
local k = 0
request = function()
  k = k + 1
  local name = {lua_string(prefix)} .. "x" .. k
  local body = '{{"username":"' .. name .. '","email":"' .. name .. '@example.com",'
    .. '"password":"{PASSWORD}"}}'
  return wrk.format("POST", "/api/v1/auth/register",
    {{["Content-Type"] = "application/json"}}, body)
end
"""


def password_change(tokens: Sequence[str]) -> str:
    """Each access token (of an account still at ``PASSWORD``) changes its password once."""
    body = f'{{"current_password":"{PASSWORD}","new_password":"{NEW_PASSWORD}"}}'
    return bearer_tokens("POST", "/api/v1/users/profile/password", tokens, body, once=True)


def refresh(tokens: Sequence[str]) -> str:
    """Per-connection chains: each answer's new refresh token is queued for the next
    request (wrk calls response() before it builds that connection's next request); every
    token is sent once. A failed answer breaks its chain, a spare token restarts it."""
    table = ",\n".join(lua_string(token) for token in tokens)
    return f"""
local queue = {{
{table}
}}
local head = 1
local tail = #queue
request = function()
  local token = queue[head]
  queue[head] = nil
  head = head + 1
  if token == nil then token = "exhausted" end
  return wrk.format("POST", "/api/v1/auth/token/refresh",
    {{["Content-Type"] = "application/json"}}, '{{"refresh_token":"' .. token .. '"}}')
end
response = function(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token ~= nil then
    tail = tail + 1
    queue[tail] = token
  end
end
"""

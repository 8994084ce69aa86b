-- Shared by post.lua and claim_delete.lua (loaded with dofile from the same folder): settings
-- from the script arguments or the environment, and the report printed by done().
--
-- Settings, as `wrk ... -s SCRIPT URL -- queue=NAME project=ID client_id=UUID` or as the
-- environment variables WRK_QUEUE, WRK_PROJECT and WRK_CLIENT_ID (arguments win):
--   queue      queue name                   (default wrk-bench)
--   project    X-Project-ID                 (default wrk-bench)
--   client_id  Client-ID, a UUID            (default 3381af92-2b9e-11e3-b191-71861300734c)
-- claim_delete.lua also reads limit (5), ttl (60) and grace (60), or WRK_LIMIT, WRK_TTL, WRK_GRACE.

local M = {}

local DEFAULTS = {
  queue = "wrk-bench",
  project = "wrk-bench",
  client_id = "3381af92-2b9e-11e3-b191-71861300734c",
  limit = "5",
  ttl = "60",
  grace = "60",
}

function M.settings(args)
  local s = {}
  for key, default in pairs(DEFAULTS) do
    s[key] = os.getenv("WRK_" .. key:upper()) or default
  end
  for _, arg in ipairs(args or {}) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if not key or DEFAULTS[key] == nil then
      error("unknown script argument '" .. arg .. "' (use key=value with one of: queue, project, "
            .. "client_id, limit, ttl, grace)")
    end
    s[key] = value
  end
  return s
end

-- The request headers. wrk.headers holds wrk's own Host header until a script replaces the
-- table, so it is kept here: HTTP/1.1 requires it, and strict servers (h11's, so Hypercorn)
-- answer 400 without it.
function M.headers(s)
  return {
    ["Host"] = wrk.headers["Host"],
    ["Client-ID"] = s.client_id,
    ["X-Project-ID"] = s.project,
    ["Content-Type"] = "application/json",
  }
end

-- Counts a response that is not 2xx: wrk itself only counts statuses above 399, and only in
-- its summary line, so 1xx/3xx would pass unnoticed. Each status gets a flat "status_NNN"
-- counter: thread:get() in wrk 4.1 crashes on nested tables.
function M.count_status(counters, status)
  if status < 200 or status > 299 then
    counters.errors = counters.errors + 1
    local key = "status_" .. status
    counters[key] = (counters[key] or 0) + 1
    return false
  end
  return true
end

local function encode(value)
  local kind = type(value)
  if kind == "table" then
    if #value > 0 then
      local items = {}
      for i, v in ipairs(value) do items[i] = encode(v) end
      return "[" .. table.concat(items, ",") .. "]"
    end
    local keys = {}
    for k in pairs(value) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local items = {}
    for _, k in ipairs(keys) do
      items[#items + 1] = string.format("%q", k) .. ":" .. encode(value[k])
    end
    return "{" .. table.concat(items, ",") .. "}"
  elseif kind == "number" then
    if value == math.floor(value) then return string.format("%d", value) end
    return string.format("%.3f", value)
  elseif kind == "string" then
    return string.format("%q", value)
  elseif kind == "boolean" then
    return tostring(value)
  end
  return "null"
end

-- The percentiles at which done() reports latency: enough points for a reader to merge the
-- distributions of several wrk processes (one per gateway) into one.
local POINTS = {}
for p = 1, 90 do POINTS[#POINTS + 1] = p end
for p = 90.5, 99, 0.5 do POINTS[#POINTS + 1] = p end
for _, p in ipairs({ 99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 100 }) do POINTS[#POINTS + 1] = p end

-- Sums the counters of every thread and prints a short report, then one line
-- "WRK_RESULT {json}" for scripts (latencies in microseconds).
function M.report(script, threads, summary, latency)
  local total, statuses = { errors = 0 }, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("counters")) do
      local status = k:match("^status_(%d+)$")
      if status then
        statuses[status] = (statuses[status] or 0) + v
      else
        total[k] = (total[k] or 0) + v
      end
    end
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  local quantiles = {}
  -- (percentile(100) is 0 in wrk 4.1: its rank runs past the last value)
  for i, p in ipairs(POINTS) do
    quantiles[i] = { p, p == 100 and latency.max or latency:percentile(p) }
  end
  local result = {
    script = script,
    duration_us = summary.duration,
    requests = summary.requests,
    req_per_s = summary.requests / seconds,
    errors = total.errors + socket_errors,
    non_2xx = total.errors,
    statuses = statuses,
    socket_errors = { connect = e.connect, read = e.read, write = e.write, timeout = e.timeout },
    latency_us = {
      p50 = latency:percentile(50), p90 = latency:percentile(90), p99 = latency:percentile(99),
      mean = latency.mean, max = latency.max,
    },
    quantiles_us = quantiles,
    counters = total,
  }
  local counts = {}
  for k, v in pairs(total) do
    if k ~= "errors" then counts[#counts + 1] = k .. " " .. v end
  end
  table.sort(counts)
  io.write(string.format("%s: %d requests in %.1f s, %.1f req/s; %s\n", script, summary.requests,
                         seconds, summary.requests / seconds, table.concat(counts, ", ")))
  io.write(string.format("  latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                         latency:percentile(50) / 1000, latency:percentile(90) / 1000,
                         latency:percentile(99) / 1000, latency.max / 1000))
  local listed = {}
  for status, n in pairs(statuses) do listed[#listed + 1] = status .. " x" .. n end
  table.sort(listed)
  io.write(string.format("  errors %d: non-2xx %d%s; socket connect %d, read %d, write %d, "
                         .. "timeout %d\n", result.errors, result.non_2xx,
                         #listed > 0 and " (" .. table.concat(listed, ", ") .. ")" or "",
                         e.connect, e.read, e.write, e.timeout))
  io.write("WRK_RESULT ", encode(result), "\n")
end

return M

-- wrk producer for the Zaqar v2 API: every request posts one message to one queue.
--
--   wrk -t1 -c4 -d20s -s bench/wrk/post.lua http://127.0.0.1:8888 -- queue=bench project=bench
--
-- Settings (queue, project, client_id) as script arguments or WRK_* environment variables:
-- see _common.lua. done() prints posts, errors (every response that is not 2xx, and socket
-- errors), p50/p90/p99 and a "WRK_RESULT {json}" line.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "_common.lua")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local s = common.settings(args)
  counters = { posts = 0, errors = 0 }
  -- A fixed request: wrk sends the same bytes every time and never calls Lua to build one.
  wrk.method = "POST"
  wrk.path = "/v2/queues/" .. s.queue .. "/messages"
  wrk.headers = common.headers(s)
  wrk.body = '{"messages":[{"body":{"event":"wrk","payload":"0123456789abcdef"},"ttl":300}]}'
end

function response(status, headers, body)
  if common.count_status(counters, status) then
    counters.posts = counters.posts + 1
  end
end

function done(summary, latency, requests)
  common.report("post", threads, summary, latency)
end

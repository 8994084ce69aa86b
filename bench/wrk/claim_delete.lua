-- wrk consumer for the Zaqar v2 API: claims up to `limit` messages
-- (POST /v2/queues/Q/claims?limit=5 with ttl and grace), then deletes each claimed message
-- through its href (which carries the claim_id), then claims again.
--
--   wrk -t4 -c4 -d20s -s bench/wrk/claim_delete.lua http://127.0.0.1:8888 -- queue=bench \
--       project=bench
--
-- Settings (queue, project, client_id, limit, ttl, grace) as script arguments or WRK_*
-- environment variables: see _common.lua.
--
-- wrk gives response() no connection, so the hrefs of a claim go to a list of its thread and
-- the thread's next requests delete them. A response is told apart by its status: 201 is a
-- claim that returned messages; a 204 is an empty claim or a delete, decided by what the thread
-- has in flight. With one connection per thread (-tN -cN) a thread has one request in flight and
-- every response is classified exactly; with more, a 204 or an error while both kinds are in
-- flight is counted under "ambiguous" (and as a delete).
--
-- done() prints claims, empty claims (204), claimed messages, deletes, errors (every response
-- that is not 2xx, and socket errors), p50/p90/p99 over all the consumer's requests and a
-- "WRK_RESULT {json}" line.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "_common.lua")

local threads = {}
local claim_request
local pending, head, tail = {}, 1, 0
local in_flight = { claim = 0, delete = 0 }
local unsent = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  local s = common.settings(args)
  -- wrk 4.1 calls request() once in its first thread, before the run, to check what it
  -- returns; that request is never sent.
  unsent = thread_number == 1 and 1 or 0
  counters = {
    claims = 0, empty_claims = 0, claimed_messages = 0, deletes = 0,
    claim_errors = 0, delete_errors = 0, ambiguous = 0, errors = 0,
  }
  wrk.headers = common.headers(s)
  claim_request = wrk.format("POST", "/v2/queues/" .. s.queue .. "/claims?limit=" .. s.limit,
                             nil, '{"ttl":' .. s.ttl .. ',"grace":' .. s.grace .. '}')
end

function request()
  if unsent > 0 then
    unsent = unsent - 1
    return claim_request
  end
  if head <= tail then
    local href = pending[head]
    pending[head] = nil
    head = head + 1
    in_flight.delete = in_flight.delete + 1
    return wrk.format("DELETE", href)
  end
  in_flight.claim = in_flight.claim + 1
  return claim_request
end

local function kind_of(status)
  if status == 201 then return "claim" end
  if in_flight.claim == 0 then return "delete" end
  if in_flight.delete == 0 then return "claim" end
  counters.ambiguous = counters.ambiguous + 1
  return "delete"
end

function response(status, headers, body)
  local kind = kind_of(status)
  -- (a wrong guess on an ambiguous response must not drive a count below zero)
  in_flight[kind] = math.max(in_flight[kind] - 1, 0)
  local ok = common.count_status(counters, status)
  if kind == "delete" then
    if ok then
      counters.deletes = counters.deletes + 1
    else
      counters.delete_errors = counters.delete_errors + 1
    end
    return
  end
  if not ok then
    counters.claim_errors = counters.claim_errors + 1
    return
  end
  counters.claims = counters.claims + 1
  if status == 204 then
    counters.empty_claims = counters.empty_claims + 1
    return
  end
  for href in body:gmatch('"href"%s*:%s*"([^"]+)"') do
    tail = tail + 1
    pending[tail] = href
    counters.claimed_messages = counters.claimed_messages + 1
  end
end

function done(summary, latency, requests)
  common.report("claim_delete", threads, summary, latency)
end

-- Each request a new change: a fresh identity override per request, per connection. Sent by the
-- change_path bench and by benches/callgrind/change_path.sh; the token is the bench's TOKEN.
--
-- Each wrk thread has a Lua state of its own; `setup` runs in the main one and gives each thread
-- its own prefix, which `request` reads as a global (a local of that name here would shadow it,
-- and every thread would send the same identifiers). The prefixes are drawn from a generator
-- seeded with the time and this process's address space, so that a later run (a warm-up, the
-- next bench round) sends identifiers no earlier run sent: an override set again to the value it
-- has is acknowledged without a change, and would be counted as one.
local counter = 0
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 1000003)
setup = function(thread)
  thread:set("thread_id", math.random(1, 1000000000))
end
wrk.method = "PUT"
wrk.body = '{"enabled": true, "value": "bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token-0123456789"
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/environments/1/features/1/identities/u" .. thread_id .. "-" .. counter)
end

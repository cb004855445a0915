-- Each request a new change: a fresh identity override per request, per connection. Sent by the
-- change_path bench and by benches/callgrind/change_path.sh; the token is the bench's TOKEN.
local counter = 0
local thread_id = 0
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

-- The wrk script of the load bench (benches/load.rs, LOAD_CLIENT=wrk). Arguments after `--`:
--   method, path prefix, paths (the path is the prefix and a counter modulo this), body bytes, users file
-- The users file has one `<z32> <cookie>` line per user; each thread takes the next user for every
-- request, round robin from its own starting point, so concurrent writes mostly go to distinct users.
-- Every response outside 200-299 counts as an error; `done` prints one `WRK {json}` line.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  method = args[1]
  prefix = args[2]
  paths = tonumber(args[3])
  local size = tonumber(args[4])
  users = {}
  for line in io.lines(args[5]) do
    local host, cookie = line:match("^(%S+) ?(.*)$")
    table.insert(users, { host = host, cookie = cookie })
  end
  if size > 0 then
    body = string.rep("p", size)
  end
  counter = index * 7919
  user = index * math.floor(#users / 2)
  bad = 0
  first_bad = 0
end

function request()
  counter = counter + 1
  user = user + 1
  local who = users[(user % #users) + 1]
  local headers = { ["pubky-host"] = who.host }
  if who.cookie ~= "" then
    headers["cookie"] = who.cookie
  end
  return wrk.format(method, prefix .. (counter % paths), headers, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == 0 then
      first_bad = status
    end
  end
end

function done(summary, latency, requests)
  local non_2xx, first = 0, 0
  for _, thread in ipairs(threads) do
    non_2xx = non_2xx + thread:get("bad")
    if first == 0 then
      first = thread:get("first_bad")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"bytes":%d,"socket_errors":%d,"non_2xx":%d,' ..
    '"first_non_2xx":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.timeout,
    non_2xx, first, latency:percentile(50), latency:percentile(99), latency.max))
end

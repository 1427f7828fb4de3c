-- wrk script for scripts/flood.py: POSTs the body in $FLOOD_BODY (a file) to the path given as
-- wrk's URL and counts answers by status, and 429s without a Retry-After header. Prints one
-- JSON line at the end.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("FLOOD_BODY"), "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  wrk.headers["Content-Type"] = "application/json"
  f:close()
  counts = {}
  no_retry_after = 0
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 429 and headers["Retry-After"] == nil and headers["retry-after"] == nil then
    no_retry_after = no_retry_after + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  local missing = 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
    missing = missing + t:get("no_retry_after")
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  io.write(string.format(
    'FLOOD {"status": {%s}, "no_retry_after": %d, "timeouts": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    table.concat(parts, ", "), missing, summary.errors.timeout, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end

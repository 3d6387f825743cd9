-- wrk script for bench/run.sh. Requests rotate through the tokens in the
-- file named by TOKENS (one per line) as `Authorization: Bearer …`, with the
-- X-Forwarded-Method/-Uri headers a proxy sends to /auth/verify. Every route
-- gets exactly the same requests (the trivial one ignores the headers), so
-- the client's work, which shares the CPUs with the server, is the same
-- for all of them and the ratio measures the server.

local tokens = {}
local next_token = 1
local path = os.getenv("BENCH_PATH") or "/healthz"
local method = os.getenv("BENCH_ORIGINAL_METHOD") or "GET"


function init(args)
  local file = os.getenv("TOKENS")
  if file and file ~= "" then
    for line in io.lines(file) do
      if line ~= "" then tokens[#tokens + 1] = line end
    end
    -- Threads start at different places in the list.
    next_token = (math.random(1, #tokens))
  end
end

function request()
  local headers = {}
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[next_token]
    headers["X-Forwarded-Method"] = method
    headers["X-Forwarded-Uri"] = "/bench/resource"
    next_token = next_token % #tokens + 1
  end
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    "RESULT rps=%.0f p50_us=%d p99_us=%d requests=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.requests, errors, summary.errors.status))
end

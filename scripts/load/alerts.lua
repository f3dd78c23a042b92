-- wrk script for scripts/load: POST /v1/alerts with one Alertmanager alert per request.
-- MODE=unique gives every request its own deploymentId (each stores a new report);
-- MODE=repeat sends one deploymentId again and again (each is recognised as resent).
local mode = os.getenv("MODE") or "unique"
local token = os.getenv("TOKEN") or ""
local counter = 0
local threads = 0

function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

function init(args)
    math.randomseed(os.time() + (tid or 0))
    run = math.random(1, 1000000000)
end

function request()
    counter = counter + 1
    local id = "load-repeat"
    if mode == "unique" then
        id = string.format("load-%d-%d-%d", run, tid or 0, counter)
    end
    local body = string.format(
        '{"version":"4","status":"firing","receiver":"dd","alerts":[{"status":"firing",' ..
        '"labels":{"alertname":"LoadTest","deploymentId":"%s","hostname":"web-1","severity":"warning"},' ..
        '"annotations":{"description":"load"},"startsAt":"2026-11-25T10:00:00Z",' ..
        '"endsAt":"0001-01-01T00:00:00Z","fingerprint":"f00d"}]}', id)
    local headers = {["Content-Type"] = "application/json"}
    if token ~= "" then
        headers["Authorization"] = "Bearer " .. token
    end
    return wrk.format("POST", "/v1/alerts", headers, body)
end

function done(summary, latency, requests)
    io.write(string.format("RESULT requests=%d non2xx=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f\n",
        summary.requests, summary.errors.status, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

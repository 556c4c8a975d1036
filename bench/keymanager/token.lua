-- wrk script: client_credentials token requests with HTTP Basic client
-- authentication. The credentials come from the environment (BASIC =
-- base64 of client_id:client_secret), set by bench/keymanager/run.
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. (os.getenv("BASIC") or "")

-- one machine-readable line for the runner (wrk counts statuses >= 400 in
-- errors.status)
done = function(summary, latency, requests)
	io.write(string.format("RESULT requests=%d duration_us=%d bad_status=%d socket_errors=%d p50_us=%d p99_us=%d\n",
		summary.requests, summary.duration, summary.errors.status,
		summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
		latency:percentile(50), latency:percentile(99)))
end

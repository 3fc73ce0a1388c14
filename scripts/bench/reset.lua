-- POST /api/v1/auth/password-reset with BENCH_RESET_BODY, over and over: the
-- answer must take as long whether or not the account exists (issue 15).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.path = "/api/v1/auth/password-reset"
wrk.body = os.getenv("BENCH_RESET_BODY")
wrk.headers["Content-Type"] = "application/json"

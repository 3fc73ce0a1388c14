-- POST /api/v1/auth/login with one user's correct credentials, over and over
-- (argon2id verify on every request). BENCH_LOGIN_BODY holds the JSON body.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.path = "/api/v1/auth/login"
wrk.body = os.getenv("BENCH_LOGIN_BODY")
wrk.headers["Content-Type"] = "application/json"

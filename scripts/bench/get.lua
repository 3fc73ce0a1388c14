-- GET with the headers given by -H; only the report at the end.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

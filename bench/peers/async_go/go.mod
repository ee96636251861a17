module vitte/bench/async_go

go 1.19

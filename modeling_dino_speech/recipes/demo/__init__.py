"""The offline demo: `corpus` assembles a multi-speaker corpus from Debian packages, `report` evaluates every
system of a `make demo` run and writes `runs/demo/report.md`."""

"""The offline demo: `corpus` assembles a multi-speaker corpus from Debian packages, `report` evaluates every
system of a `make demo` run and writes `runs/demo/report.md`.

The corpus builder, one concept per module: `config` (settings and fingerprint), `debian` (packages without
root), `synthesis` (espeak-ng / flite voices and texts), `real_voices` (the recorded voices), `signal` (reading,
telephone band, trimming, joining, level), `rendering` (one job per output file, in a process pool),
`trial_lists`, `files` (atomic writes, locks), `readme` (the corpus README and attribution) and `corpus`
(the build itself and the command line)."""

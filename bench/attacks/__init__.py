"""Attack measurements for docs/security.md: each module replays one attack of issue 13 on a
node process, before and after the fix, beside a legitimate client (:mod:`bench.attacks.probe`)."""

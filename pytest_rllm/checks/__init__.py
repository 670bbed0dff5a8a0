"""The checks a suite test makes: finding checks (configurations of one session) and baseline checks."""

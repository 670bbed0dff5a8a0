"""The keys of the (name, value) pairs a test's report carries in user_properties (JUnit and xdist carry them too)."""

CLAIM_PROPERTY = "rllm_claim"  # the sentence a finding test checks: its docstring's first line
EVIDENCE_PROPERTY = "rllm_evidence"  # numbers behind the verdict, one line per entry
FINDING_PROPERTY = "rllm_finding"  # one typed verdict (FindingCheck.to_dict()) per rllm_finding check
CHECK_PROPERTY = "rllm_check"  # one baseline check outcome (CheckOutcome.to_dict(), as JSON text)
AB_PROPERTY = "rllm_ab"  # one A/B row (candidate.ABRow.to_dict() and the two engines) of the candidate comparison

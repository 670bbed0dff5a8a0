"""Keys of the item.user_properties entries pytest-rllm writes and reads back (JUnit XML and xdist carry them).

A plain constants module: the plugin, the baselines and the report all import it,
so it must stay free of imports.
"""

CHECK_PROPERTY = "rllm_check"  # a baseline check outcome (JSON text)
CLAIM_PROPERTY = "rllm_claim"  # the sentence a finding test checks
EVIDENCE_PROPERTY = "rllm_evidence"  # numbers behind a finding's verdict, one per entry

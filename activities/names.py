"""Activity names: the contract between workflows/ and activities/ (workflows call by name)."""

STORE = "store_study"
VERIFY = "verify_study"
COMMIT = "commit_study"
TRANSCODE = "transcode_study"
INDEX = "index_study"
GENERATE_JSON = "generate_study_json"
STUDY_STEPS = (STORE, VERIFY, COMMIT, TRANSCODE, INDEX, GENERATE_JSON)

COMMITMENT_CHECK = "check_commitment"
COMMITMENT_REPORT = "send_commitment_report"

package wire

// EnrollRequest is the body of POST /v1/enroll: a one-time join token an
// operator made for the host.
type EnrollRequest struct {
	JoinToken string `json:"join_token"`
}

// EnrollResponse answers an enrollment: the host the join token was made
// for and its bearer token, shown this once (the hub keeps its hash).
type EnrollResponse struct {
	Host  string `json:"host"`
	Token string `json:"token"`
}

// Error is the body of every hub error response: a human sentence that
// says what to do next, and a stable machine code (for example
// "conflict", "bad_body", "unauthorized", "not_found").
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// HaveSeq, on a chain_gap answer to receipts, is the last sequence
	// number of the host's chain the hub holds (0: none): the agent sends
	// from HaveSeq+1. Absent from other errors, and from hubs before it
	// (whose message says "holds up to seq N").
	HaveSeq *uint64 `json:"have_seq,omitempty"`
}

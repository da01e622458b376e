package hub

import "testing"

// The audit and notifications listings refuse a bad cursor or limit with
// 400 bad_query naming the parameter, and accept the good ones.
func TestListingPageParams(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1/audit", "/v1/notifications"} {
		for _, q := range []string{"after=-1", "after=x", "limit=0", "limit=1001", "limit=x"} {
			code, b := e.do("GET", path+"?"+q, e.opTok, nil)
			if code != 400 || errCode(t, b) != "bad_query" {
				t.Errorf("%s?%s: got %d %s; want 400 bad_query", path, q, code, b)
			}
		}
		for _, q := range []string{"", "after=0", "after=5&limit=1000", "limit=1"} {
			if code, b := e.do("GET", path+"?"+q, e.opTok, nil); code != 200 {
				t.Errorf("%s?%s: got %d %s; want 200", path, q, code, b)
			}
		}
	}
}

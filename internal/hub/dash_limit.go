package hub

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The dashboard's login is rate limited per client address, so an
// operator token cannot be guessed through it at speed: every attempt
// takes a token from the address's bucket (LoginBurst of them, one back
// every LoginRefill), a successful login gives it back, and an address
// with an empty bucket is answered 429 with Retry-After without its
// token being looked at. IPv6 clients are counted by their /64 (one host
// holds a whole /64). The buckets are in the hub's memory: each replica
// limits on its own.
const (
	LoginBurst  = 5
	LoginRefill = 12 * time.Second // 5 a minute, sustained
	// maxLoginBuckets bounds the limiter's memory; past it, buckets that
	// are full again are dropped, and when none is, every new address
	// shares one bucket.
	maxLoginBuckets = 10000
)

// loginLimiter is a token bucket per client address. Safe for concurrent
// use.
type loginLimiter struct {
	burst  float64
	refill time.Duration

	mu       sync.Mutex
	buckets  map[string]*bucket
	overflow bucket // shared by new addresses while buckets is full
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

func newLoginLimiter(burst int, refill time.Duration) *loginLimiter {
	return &loginLimiter{burst: float64(burst), refill: refill, buckets: map[string]*bucket{}, overflow: bucket{tokens: float64(burst)}}
}

// fill brings b up to now.
func (l *loginLimiter) fill(b *bucket, now time.Time) {
	if b.at.IsZero() {
		b.at = now
		return
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(d)/float64(l.refill))
		b.at = now
	}
}

// take takes a token for client at now. ok false: none is left, and
// retry is how long until one is.
func (l *loginLimiter) take(client string, now time.Time) (ok bool, retry time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(client, now)
	l.fill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) * float64(l.refill))
	return false, max(wait, time.Second)
}

// refund gives back the token of an attempt that succeeded.
func (l *loginLimiter) refund(client string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(client, now)
	l.fill(b, now)
	b.tokens = math.Min(l.burst, b.tokens+1)
}

func (l *loginLimiter) bucketLocked(client string, now time.Time) *bucket {
	if b, ok := l.buckets[client]; ok {
		return b
	}
	if len(l.buckets) >= maxLoginBuckets {
		for k, b := range l.buckets {
			l.fill(b, now)
			if b.tokens >= l.burst {
				delete(l.buckets, k)
			}
		}
		if len(l.buckets) >= maxLoginBuckets {
			return &l.overflow
		}
	}
	b := &bucket{tokens: l.burst}
	l.buckets[client] = b
	return b
}

// clientKey is what the limiter counts a request by: its peer's address,
// an IPv6 one cut to its /64.
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

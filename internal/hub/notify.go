package hub

import (
	"context"
	"sync"
	"time"
)

// Notifier carries "host H's desired document is now at generation G"
// between the hubs that share one store, so that a PUT on one replica
// answers the long-polls held on every other. The hub owns the interface;
// LocalNotifier is the in-process one (one hub on SQLite),
// postgres.Notifier the one for replicas on PostgreSQL (LISTEN/NOTIFY).
//
// Delivery is best effort: a notification may be lost (a dropped
// connection), duplicated or late, so the hub also re-checks the
// generations of the hosts it holds long-polls for every
// Options.Recheck, and a lost notification delays an agent by at most
// that long. A LocalNotifier loses nothing, and with it the hub does
// not re-check.
type Notifier interface {
	// Publish announces that host's desired document is at generation gen
	// (after the store committed it). It does not block on subscribers.
	// Safe for concurrent use.
	Publish(ctx context.Context, host string, gen int64) error
	// Subscribe calls fn for every change published by any Notifier that
	// shares the store (this one included), until ctx ends; it blocks,
	// and returns nil when ctx ends. Any other return means the
	// subscription broke (notifications may have been lost meanwhile);
	// the caller subscribes again. fn must not block.
	Subscribe(ctx context.Context, fn func(host string, gen int64)) error
}

// LocalNotifier is the in-process Notifier: every Subscribe of one
// LocalNotifier receives every Publish on it, synchronously. Hubs in one
// process sharing one store share one LocalNotifier. The zero value is
// ready to use.
type LocalNotifier struct {
	mu   sync.Mutex
	next int
	subs map[int]func(string, int64)
}

var _ Notifier = (*LocalNotifier)(nil)

// Publish implements Notifier; it calls the subscribers before returning.
func (n *LocalNotifier) Publish(_ context.Context, host string, gen int64) error {
	n.mu.Lock()
	fns := make([]func(string, int64), 0, len(n.subs))
	for _, fn := range n.subs {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(host, gen)
	}
	return nil
}

// Subscribe implements Notifier.
func (n *LocalNotifier) Subscribe(ctx context.Context, fn func(string, int64)) error {
	n.mu.Lock()
	if n.subs == nil {
		n.subs = map[int]func(string, int64){}
	}
	id := n.next
	n.next++
	n.subs[id] = fn
	n.mu.Unlock()
	<-ctx.Done()
	n.mu.Lock()
	delete(n.subs, id)
	n.mu.Unlock()
	return nil
}

// waitEntry is the wake-up channel of one host's held long-polls.
type waitEntry struct {
	ch chan struct{} // closed at the host's next generation change
	// gen is the lowest generation a poller holding ch has read; a
	// change to a higher one wakes them. -1 until a poller has read.
	gen int64
}

// waiter returns the channel closed at host's next generation change.
func (s *Server) waiter(host string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.waiters[host]
	if !ok {
		e = &waitEntry{ch: make(chan struct{}), gen: -1}
		s.waiters[host] = e
	}
	return e.ch
}

// holding records that a poller holding ch (from waiter) has read
// generation gen of host.
func (s *Server) holding(host string, ch <-chan struct{}, gen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.waiters[host]; ok && e.ch == ch && (e.gen < 0 || gen < e.gen) {
		e.gen = gen
	}
}

// wakeLocked wakes host's long-polls.
func (s *Server) wakeLocked(host string) {
	if e, ok := s.waiters[host]; ok {
		close(e.ch)
		delete(s.waiters, host)
	}
}

// changed wakes host's long-polls when gen is beyond what they hold (a
// notification from any hub, or a re-check).
func (s *Server) changed(host string, gen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.waiters[host]; ok && gen > e.gen {
		s.wakeLocked(host)
	}
}

// notify wakes the long-polls of host, which has just got generation gen
// through this hub, and tells the other hubs.
func (s *Server) notify(ctx context.Context, host string, gen int64) {
	s.mu.Lock()
	s.putAt[host] = genTime{gen: gen, at: time.Now()}
	s.wakeLocked(host)
	s.mu.Unlock()
	if err := s.notifier.Publish(context.WithoutCancel(ctx), host, gen); err != nil {
		s.log.Warn("publishing a desired change to the other hubs failed; their long-polls wake at the next re-check",
			"host", host, "generation", gen, "err", err)
	}
}

// subscribe runs until ctx ends, feeding notifications to changed and
// subscribing again (after a re-check) when the subscription breaks.
func (s *Server) subscribe(ctx context.Context) {
	for {
		err := s.notifier.Subscribe(ctx, s.changed)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("the desired-change subscription broke; re-checking and subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second + jitter(time.Second)):
		}
		s.recheck(ctx)
	}
}

// recheckLoop re-checks every s.recheckEvery until ctx ends.
func (s *Server) recheckLoop(ctx context.Context) {
	t := time.NewTicker(s.recheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.recheck(ctx)
		}
	}
}

// recheck reads the generations of every host and wakes the long-polls of
// those that moved beyond what their pollers hold: the backstop for a lost
// notification. It reads nothing when no long-poll is held.
func (s *Server) recheck(ctx context.Context) {
	s.mu.Lock()
	n := len(s.waiters)
	s.mu.Unlock()
	if n == 0 {
		return
	}
	hosts, err := s.st.Hosts(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("re-checking desired generations", "err", err)
		}
		return
	}
	for _, h := range hosts {
		s.changed(h.ID, h.DesiredGeneration)
	}
}

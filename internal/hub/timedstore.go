package hub

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// timedStore is a store.Store that observes every call's latency in the
// steward_hub_store_duration_seconds histogram, by method.
type timedStore struct {
	st store.Store
	h  *prometheus.HistogramVec
}

var _ store.Store = timedStore{}

func (t timedStore) obs(op string, start time.Time) {
	t.h.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (t timedStore) CreateJoinToken(ctx context.Context, host, tokenHash string, expires time.Time) error {
	defer t.obs("CreateJoinToken", time.Now())
	return t.st.CreateJoinToken(ctx, host, tokenHash, expires)
}

func (t timedStore) Enroll(ctx context.Context, joinTokenHash, hostTokenHash string) (string, error) {
	defer t.obs("Enroll", time.Now())
	return t.st.Enroll(ctx, joinTokenHash, hostTokenHash)
}

func (t timedStore) HostByToken(ctx context.Context, tokenHash string) (store.Host, error) {
	defer t.obs("HostByToken", time.Now())
	return t.st.HostByToken(ctx, tokenHash)
}

func (t timedStore) Host(ctx context.Context, id string) (store.Host, error) {
	defer t.obs("Host", time.Now())
	return t.st.Host(ctx, id)
}

func (t timedStore) Hosts(ctx context.Context) ([]store.Host, error) {
	defer t.obs("Hosts", time.Now())
	return t.st.Hosts(ctx)
}

func (t timedStore) RevokeHost(ctx context.Context, id string) error {
	defer t.obs("RevokeHost", time.Now())
	return t.st.RevokeHost(ctx, id)
}

func (t timedStore) SetBlocked(ctx context.Context, id string, blocked bool, reason string) error {
	defer t.obs("SetBlocked", time.Now())
	return t.st.SetBlocked(ctx, id, blocked, reason)
}

func (t timedStore) CreateOperator(ctx context.Context, name, tokenHash string) error {
	defer t.obs("CreateOperator", time.Now())
	return t.st.CreateOperator(ctx, name, tokenHash)
}

func (t timedStore) OperatorByToken(ctx context.Context, tokenHash string) (store.Operator, error) {
	defer t.obs("OperatorByToken", time.Now())
	return t.st.OperatorByToken(ctx, tokenHash)
}

func (t timedStore) Operators(ctx context.Context) ([]store.Operator, error) {
	defer t.obs("Operators", time.Now())
	return t.st.Operators(ctx)
}

func (t timedStore) RevokeOperator(ctx context.Context, name string) error {
	defer t.obs("RevokeOperator", time.Now())
	return t.st.RevokeOperator(ctx, name)
}

func (t timedStore) TouchOperator(ctx context.Context, name string, at time.Time) error {
	defer t.obs("TouchOperator", time.Now())
	return t.st.TouchOperator(ctx, name, at)
}

func (t timedStore) PutDesired(ctx context.Context, host string, doc []byte, ifMatch int64, author string) (int64, error) {
	defer t.obs("PutDesired", time.Now())
	return t.st.PutDesired(ctx, host, doc, ifMatch, author)
}

func (t timedStore) Desired(ctx context.Context, host string) (store.Desired, error) {
	defer t.obs("Desired", time.Now())
	return t.st.Desired(ctx, host)
}

func (t timedStore) DesiredHistory(ctx context.Context, host string, limit int) ([]store.Desired, error) {
	defer t.obs("DesiredHistory", time.Now())
	return t.st.DesiredHistory(ctx, host, limit)
}

func (t timedStore) PutReport(ctx context.Context, host string, body []byte, hash string) error {
	defer t.obs("PutReport", time.Now())
	return t.st.PutReport(ctx, host, body, hash)
}

func (t timedStore) Heartbeat(ctx context.Context, host, hash string) (bool, error) {
	defer t.obs("Heartbeat", time.Now())
	return t.st.Heartbeat(ctx, host, hash)
}

func (t timedStore) TouchHosts(ctx context.Context, seen map[string]time.Time) error {
	defer t.obs("TouchHosts", time.Now())
	return t.st.TouchHosts(ctx, seen)
}

func (t timedStore) LastReport(ctx context.Context, host string) (store.Report, error) {
	defer t.obs("LastReport", time.Now())
	return t.st.LastReport(ctx, host)
}

func (t timedStore) AddJobSignatures(ctx context.Context, host string, payload []byte, signatures [][]byte) (store.Job, int, error) {
	defer t.obs("AddJobSignatures", time.Now())
	return t.st.AddJobSignatures(ctx, host, payload, signatures)
}

func (t timedStore) PutJob(ctx context.Context, host string, payload []byte, signatures [][]byte, uploader string) (store.Job, error) {
	defer t.obs("PutJob", time.Now())
	return t.st.PutJob(ctx, host, payload, signatures, uploader)
}

func (t timedStore) Job(ctx context.Context, host, id string) (store.Job, error) {
	defer t.obs("Job", time.Now())
	return t.st.Job(ctx, host, id)
}

func (t timedStore) Jobs(ctx context.Context, host, state string) ([]store.Job, error) {
	defer t.obs("Jobs", time.Now())
	return t.st.Jobs(ctx, host, state)
}

func (t timedStore) SetJobResult(ctx context.Context, host string, r wire.JobResult) error {
	defer t.obs("SetJobResult", time.Now())
	return t.st.SetJobResult(ctx, host, r)
}

func (t timedStore) SetPending(ctx context.Context, host string, pending []wire.Pending) error {
	defer t.obs("SetPending", time.Now())
	return t.st.SetPending(ctx, host, pending)
}

func (t timedStore) Pending(ctx context.Context, host string) ([]wire.Pending, error) {
	defer t.obs("Pending", time.Now())
	return t.st.Pending(ctx, host)
}

func (t timedStore) PendingCount(ctx context.Context) (int, error) {
	defer t.obs("PendingCount", time.Now())
	return t.st.PendingCount(ctx)
}

func (t timedStore) AppendReceipts(ctx context.Context, host string, rs []wire.Receipt) (store.ReceiptHead, error) {
	defer t.obs("AppendReceipts", time.Now())
	return t.st.AppendReceipts(ctx, host, rs)
}

func (t timedStore) ReceiptHead(ctx context.Context, host string) (store.ReceiptHead, error) {
	defer t.obs("ReceiptHead", time.Now())
	return t.st.ReceiptHead(ctx, host)
}

func (t timedStore) Receipts(ctx context.Context, host string, after uint64, limit int) ([]wire.Receipt, error) {
	defer t.obs("Receipts", time.Now())
	return t.st.Receipts(ctx, host, after, limit)
}

func (t timedStore) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	defer t.obs("AppendAudit", time.Now())
	return t.st.AppendAudit(ctx, e)
}

func (t timedStore) Audit(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	defer t.obs("Audit", time.Now())
	return t.st.Audit(ctx, after, limit)
}

func (t timedStore) AppendEvent(ctx context.Context, e store.Event) (int64, error) {
	defer t.obs("AppendEvent", time.Now())
	return t.st.AppendEvent(ctx, e)
}

func (t timedStore) Events(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	defer t.obs("Events", time.Now())
	return t.st.Events(ctx, after, limit)
}

func (t timedStore) LastEventID(ctx context.Context) (int64, error) {
	defer t.obs("LastEventID", time.Now())
	return t.st.LastEventID(ctx)
}

func (t timedStore) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	defer t.obs("PruneEvents", time.Now())
	return t.st.PruneEvents(ctx, before, keep)
}

func (t timedStore) EnqueueNotification(ctx context.Context, n store.Notification, dedup time.Duration) (int64, error) {
	defer t.obs("EnqueueNotification", time.Now())
	return t.st.EnqueueNotification(ctx, n, dedup)
}

func (t timedStore) ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]store.Notification, error) {
	defer t.obs("ClaimNotifications", time.Now())
	return t.st.ClaimNotifications(ctx, owner, now, lease, limit)
}

func (t timedStore) AckNotification(ctx context.Context, id int64, at time.Time) error {
	defer t.obs("AckNotification", time.Now())
	return t.st.AckNotification(ctx, id, at)
}

func (t timedStore) RetryNotification(ctx context.Context, id int64, owner string, next time.Time, lastErr string, dead bool) error {
	defer t.obs("RetryNotification", time.Now())
	return t.st.RetryNotification(ctx, id, owner, next, lastErr, dead)
}

func (t timedStore) Notifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	defer t.obs("Notifications", time.Now())
	return t.st.Notifications(ctx, after, limit)
}

func (t timedStore) OutboxDepth(ctx context.Context) (int, error) {
	defer t.obs("OutboxDepth", time.Now())
	return t.st.OutboxDepth(ctx)
}

func (t timedStore) PruneNotifications(ctx context.Context, before time.Time) (int64, error) {
	defer t.obs("PruneNotifications", time.Now())
	return t.st.PruneNotifications(ctx, before)
}

func (t timedStore) Close() error { return t.st.Close() }

// Writable passes the store's writability check through (a store without
// one is writable).
func (t timedStore) Writable(ctx context.Context) error {
	if ws, ok := t.st.(writableStore); ok {
		defer t.obs("Writable", time.Now())
		return ws.Writable(ctx)
	}
	return nil
}

func (t timedStore) CreateSession(ctx context.Context, tokenHash, operator string, expires time.Time) error {
	defer t.obs("CreateSession", time.Now())
	return t.st.CreateSession(ctx, tokenHash, operator, expires)
}

func (t timedStore) SessionByToken(ctx context.Context, tokenHash string, now time.Time) (store.Session, error) {
	defer t.obs("SessionByToken", time.Now())
	return t.st.SessionByToken(ctx, tokenHash, now)
}

func (t timedStore) DeleteSession(ctx context.Context, tokenHash string) error {
	defer t.obs("DeleteSession", time.Now())
	return t.st.DeleteSession(ctx, tokenHash)
}

func (t timedStore) PruneSessions(ctx context.Context, before time.Time) (int64, error) {
	defer t.obs("PruneSessions", time.Now())
	return t.st.PruneSessions(ctx, before)
}

func (t timedStore) WaitingPending(ctx context.Context, before time.Time) ([]store.PendingWait, error) {
	defer t.obs("WaitingPending", time.Now())
	return t.st.WaitingPending(ctx, before)
}

func (t timedStore) FindAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	defer t.obs("FindAudit", time.Now())
	return t.st.FindAudit(ctx, q)
}

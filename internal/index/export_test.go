package index

import (
	"context"

	"github.com/cellar-db/cellar/internal/trigger"
)

// SetRenew makes m renew its leases with f instead of its trigger engine's
// Renew, so that a test can make renewals fail or hang. Call it before
// Start.
func SetRenew(m *Manager, f func(ctx context.Context, name string, token int64, shard int) (trigger.Lease, error)) {
	m.renew = f
}

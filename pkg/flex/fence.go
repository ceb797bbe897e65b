package flex

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/petfabric/petfabric/pkg/datera"
)

// The ReadWriteOnce fence on the data path. The extender keeps a RWO volume's pods on one node,
// but a pod with spec.nodeName bypasses the scheduler, and a node report that goes stale makes
// its holder look gone. A local filesystem mounted read-write by two nodes is destroyed, so the
// driver itself refuses: a RWO volume's ACL holds at most one initiator, and a mount on a node
// whose initiator is not alone in it fails, naming the holder.
//
// The driver never removes another node's initiator. A holder leaves the ACL when its node
// unmounts the volume, or when the reconcile loop fences it (it alone can tell a dead node from
// a slow one). The driver removes only the entry it added itself in this call.
//
// Two nodes mounting at the same moment must not both win. Reading the ACL, then adding, is a
// race (both read an empty ACL); so the driver checks, adds, and reads again (add-then-verify).
// After its add a node proceeds only if a read shows it alone. That gives at most one winner:
// if A and B both proceeded, A's solitary read came before B's add, and B's add came before
// B's solitary read, which would then have seen A (A removes its entry only when it yields).
//
// Who yields when both see each other needs an arbiter that both compute alike. Datera's API
// documents no order for acl_policy.initiators (the simulator keeps grant order; the real
// system may sort or not, and we know of no statement either way), so "first in the list wins" is not
// something to bet data on. The arbiter is the IQN: a node that sees a smaller IQN than its own
// next to it yields at once; the node with the smallest IQN waits (RWOSettleTimeout, default 5s)
// for the others to withdraw and wins when alone. An initiator that is there without racing (a
// holder that already proceeded, or a dead node) never withdraws, so the waiting node yields
// when the wait ends. A node racing a holder that already proceeded loses either way: its add
// came after the holder's solitary read, so its own read shows the holder, who never
// withdraws. The wait happens only in the rare race window between check and add.

// rwoPoll is how often a node that waits for racers re-reads the ACL.
const rwoPoll = 50 * time.Millisecond

// aclHolders are the ACL entries other than self: initiators (with the name they registered)
// and initiator groups.
type aclHolders struct {
	initiators []datera.PathRef
	groups     []datera.PathRef
}

func othersIn(acl *datera.ACLPolicy, self string) aclHolders {
	var h aclHolders
	for _, r := range acl.Initiators {
		if r.InitiatorIQN() != self {
			h.initiators = append(h.initiators, r)
		}
	}
	h.groups = acl.InitiatorGroups
	return h
}

func (h aclHolders) empty() bool { return len(h.initiators) == 0 && len(h.groups) == 0 }

// yieldsTo reports whether self must give way at once: a smaller IQN is present, or an
// initiator group (whose members cannot be told apart from here).
func (h aclHolders) yieldsTo(self string) bool {
	if len(h.groups) > 0 {
		return true
	}
	for _, r := range h.initiators {
		if r.InitiatorIQN() < self {
			return true
		}
	}
	return false
}

func (h aclHolders) String() string {
	var parts []string
	for _, r := range h.initiators {
		iqn := r.InitiatorIQN()
		switch node, ok := strings.CutPrefix(r.Name, initiatorLabelPrefix); {
		case ok && node != "":
			parts = append(parts, fmt.Sprintf("initiator %s (node %q)", iqn, node))
		case r.Name != "":
			parts = append(parts, fmt.Sprintf("initiator %s (registered as %q)", iqn, r.Name))
		default:
			parts = append(parts, "initiator "+iqn)
		}
	}
	for _, g := range h.groups {
		parts = append(parts, "initiator group "+g.Path)
	}
	return strings.Join(parts, " and ")
}

func holderError(volumeID string, h aclHolders) error {
	return fmt.Errorf("volume %s is ReadWriteOnce and in use by %s; this mount proceeds once that node unmounts it or is fenced "+
		"(its initiator removed from the ACL by petfabric's reconcile loop once the node is judged dead)", volumeID, h)
}

// fenceCheck is the check before the add: it fails, changing nothing, when another initiator is
// in the ACL. added tells whether the add that follows will be this call's (false when this
// node's entry is already there, left by an interrupted earlier call).
func fenceCheck(ctx context.Context, api DateraAPI, volumeID, si, self string) (willAdd bool, err error) {
	acl, err := api.GetACL(ctx, volumeID, si)
	if err != nil {
		return false, fmt.Errorf("reading the volume's ACL: %w", err)
	}
	if h := othersIn(acl, self); !h.empty() {
		return false, holderError(volumeID, h)
	}
	return !acl.HasInitiator(self), nil
}

// fenceVerify is the read after the add (see above). On losing it removes this node's entry if
// this call added it, and fails naming the holder.
func (d *Driver) fenceVerify(ctx context.Context, log *slog.Logger, api DateraAPI, volumeID, si, self string, added bool) error {
	deadline := time.Now().Add(d.Config.RWOSettleTimeout.or(5 * time.Second))
	for {
		acl, err := api.GetACL(ctx, volumeID, si)
		if err != nil {
			return fmt.Errorf("reading the volume's ACL after adding this node: %w", err)
		}
		h := othersIn(acl, self)
		if h.empty() {
			return nil
		}
		if h.yieldsTo(self) || !time.Now().Before(deadline) {
			if added {
				if err := api.RemoveInitiatorFromACL(ctx, volumeID, si, self); err != nil {
					log.ErrorContext(ctx, "withdrawing this node from the ACL after losing the race failed; the rollback retries", "error", err)
				}
			}
			log.InfoContext(ctx, "ReadWriteOnce volume held by another node; withdrew", "holders", h.String(), "addedByThisCall", added)
			return holderError(volumeID, h)
		}
		log.InfoContext(ctx, "another node raced into the ACL; waiting for it to withdraw", "holders", h.String())
		if err := sleep(ctx, rwoPoll); err != nil {
			return fmt.Errorf("waiting for racing nodes to leave the ACL of %s: %w", volumeID, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

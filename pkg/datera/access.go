package datera

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// initiatorPrefix is how ACLs reference an initiator: initiatorPrefix + IQN.
const initiatorPrefix = "/initiators/"

// initiatorPath is how ACLs reference an initiator.
func initiatorPath(iqn string) string { return initiatorPrefix + iqn }

// InitiatorIQN is the IQN an ACL's initiator entry references (its path without the
// "/initiators/" prefix; a path without that prefix is returned as it is).
func (r PathRef) InitiatorIQN() string { return strings.TrimPrefix(r.Path, initiatorPrefix) }

// GetInitiator reads an initiator by IQN. In a sub-tenant the result may be inherited from a
// parent tenant (its Tenant says which).
func (c *Client) GetInitiator(ctx context.Context, iqn string) (*Initiator, error) {
	if err := ValidateInitiatorID(iqn); err != nil {
		return nil, err
	}
	var in Initiator
	if err := c.do(ctx, request{method: http.MethodGet, path: apiPath("initiators", iqn), out: &in}); err != nil {
		return nil, fmt.Errorf("get initiator %q: %w", iqn, err)
	}
	return &in, nil
}

// RegisterInitiator makes sure the initiator exists in the client's tenant and returns it. One
// already registered there is success; one only inherited from a parent tenant gets a local
// registration, as Cinder does.
//
// force overrides the server's warnings. Datera refuses a sub-tenant's initiators and the first
// initiator of a tenant without it (DAT-15931), so the client always forces in a sub-tenant;
// in /root the caller decides (drivers pass true, as Datera's own drivers do on v2.2).
func (c *Client) RegisterInitiator(ctx context.Context, iqn, name string, force bool) (*Initiator, error) {
	if err := ValidateInitiatorID(iqn); err != nil {
		return nil, err
	}
	if err := validateInitiatorLabel(name); err != nil {
		return nil, err
	}
	existing, err := c.GetInitiator(ctx, iqn)
	switch {
	case err == nil && (existing.Tenant == "" || existing.Tenant == c.tenant):
		return existing, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("register initiator: %w", err)
	}

	body := map[string]any{"id": iqn, "name": name}
	if force || c.tenant != DefaultTenant {
		body["force"] = true
	}
	var in Initiator
	err = c.do(ctx, request{
		method: http.MethodPost, path: "/initiators", body: body, out: &in,
		resolvePath: apiPath("initiators", iqn),
	})
	if errors.Is(err, ErrConflict) {
		return c.GetInitiator(ctx, iqn) // registered concurrently: fine
	}
	if err != nil {
		return nil, fmt.Errorf("register initiator %q: %w", iqn, err)
	}
	c.log.InfoContext(ctx, "datera initiator registered", "iqn", iqn, "name", name)
	return &in, nil
}

// GetACL reads a storage_instance's ACL.
func (c *Client) GetACL(ctx context.Context, appInstance, storageInstance string) (*ACLPolicy, error) {
	if err := validateTarget(appInstance, storageInstance); err != nil {
		return nil, err
	}
	var p ACLPolicy
	path := apiPath("app_instances", appInstance, "storage_instances", storageInstance, "acl_policy")
	if err := c.do(ctx, request{method: http.MethodGet, path: path, out: &p}); err != nil {
		return nil, fmt.Errorf("get acl of %s/%s: %w", appInstance, storageInstance, err)
	}
	return &p, nil
}

// AddInitiatorToACL grants one registered initiator access to a storage_instance. It uses the
// atomic op:add sub-endpoint, so concurrent grants for other nodes are never lost (a
// read-modify-write of the whole ACL would race). Already present is success.
func (c *Client) AddInitiatorToACL(ctx context.Context, appInstance, storageInstance, iqn string) error {
	err := c.aclOp(ctx, "add", appInstance, storageInstance, iqn)
	if errors.Is(err, ErrConflict) {
		return nil
	}
	if err != nil {
		return err
	}
	c.log.InfoContext(ctx, "datera acl: initiator added", "appInstance", appInstance, "storageInstance", storageInstance, "iqn", iqn)
	return nil
}

// RemoveInitiatorFromACL revokes one initiator atomically. Not being in the ACL is success; a
// missing app_instance or storage_instance is still reported (ErrNotFound), so callers can tell.
func (c *Client) RemoveInitiatorFromACL(ctx context.Context, appInstance, storageInstance, iqn string) error {
	err := c.aclOp(ctx, "remove", appInstance, storageInstance, iqn)
	if errors.Is(err, ErrNotFound) {
		// 404 means either "not in the ACL" (done) or "no such target"; the ACL tells which.
		acl, gerr := c.GetACL(ctx, appInstance, storageInstance)
		if gerr != nil {
			return gerr
		}
		if !acl.HasInitiator(iqn) {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	c.log.InfoContext(ctx, "datera acl: initiator removed", "appInstance", appInstance, "storageInstance", storageInstance, "iqn", iqn)
	return nil
}

func (c *Client) aclOp(ctx context.Context, op, appInstance, storageInstance, iqn string) error {
	if err := validateTarget(appInstance, storageInstance); err != nil {
		return err
	}
	if err := ValidateInitiatorID(iqn); err != nil {
		return err
	}
	path := apiPath("app_instances", appInstance, "storage_instances", storageInstance, "acl_policy", "initiators")
	body := map[string]string{"op": op, "path": initiatorPath(iqn)}
	if err := c.do(ctx, request{method: http.MethodPut, path: path, body: body}); err != nil {
		return fmt.Errorf("acl %s %s on %s/%s: %w", op, iqn, appInstance, storageInstance, err)
	}
	return nil
}

func validateTarget(appInstance, storageInstance string) error {
	if err := ValidateAppInstanceName(appInstance); err != nil {
		return err
	}
	return ValidateName("storage_instance", storageInstance)
}

// Target is where a node logs in to reach a volume.
type Target struct {
	// IQN of the iSCSI target.
	IQN string
	// Portals as host:port (port 3260 unless the server says otherwise).
	Portals []string
	// StorageInstance is the name of the storage_instance the target belongs to.
	StorageInstance string
}

// Access returns the volume's target IQN and portals. It fails with ErrNotReady unless the
// app_instance is online and its storage_instance available (see WaitAvailable).
func (c *Client) Access(ctx context.Context, name string) (*Target, error) {
	ai, err := c.GetAppInstance(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	si, _, ok := ai.Volume()
	if !ok {
		return nil, fmt.Errorf("access %q: app_instance has no volume: %w", name, ErrBadResponse)
	}
	if ai.AdminState != Online || si.OpState != OpStateAvailable {
		return nil, fmt.Errorf("access %q: admin_state %q, op_state %q: %w", name, ai.AdminState, si.OpState, ErrNotReady)
	}
	portals := si.Access.Portals()
	if si.Access.IQN == "" || len(portals) == 0 {
		return nil, fmt.Errorf("access %q: no IQN or portal yet: %w", name, ErrNotReady)
	}
	return &Target{IQN: si.Access.IQN, Portals: portals, StorageInstance: si.Name}, nil
}

package fake

import (
	"context"
	"strings"
)

// Exporter makes storage_instances real iSCSI targets (real iSCSI mode). The Server calls it
// under its state lock, so calls are serialised and the export always matches the state.
type Exporter interface {
	// Export creates the target of an onlined storage_instance, with its LUNs and ACL.
	Export(ctx context.Context, t TargetSpec) error
	// SetACL replaces who may log in to an exported target; a target not exported is ignored.
	SetACL(ctx context.Context, iqn string, allowAll bool, initiators []string) error
	// Unexport removes the target (logging out any session); a target not exported is ignored.
	Unexport(ctx context.Context, iqn string) error
	// Grow enlarges a volume's backing store.
	Grow(ctx context.Context, volumeUUID string, sizeGiB int64) error
	// Destroy releases the backing store of a deleted volume.
	Destroy(ctx context.Context, volumeUUID string) error
}

// TargetSpec is one storage_instance as an iSCSI target.
type TargetSpec struct {
	// IQN is the storage_instance's access IQN.
	IQN string
	// LUNs are its volumes, in order.
	LUNs []LUNSpec
	// AllowAll is access_control_mode allow_all: anyone may log in.
	AllowAll bool
	// Initiators are the IQNs in its ACL.
	Initiators []string
	// CHAP is the storage_instance's initiator CHAP (auth type chap), nil for none. A
	// TgtExporter with its own TgtOptions.CHAP uses that when this is nil.
	CHAP *CHAPAccount
}

// CHAPAccount is the user name and secret an initiator must present to log in.
type CHAPAccount struct {
	User, Password string
}

// LUNSpec is one volume of a target.
type LUNSpec struct {
	// VolumeUUID identifies the backing store and is the LUN's SCSI serial number, as on Datera.
	VolumeUUID string
	SizeGiB    int64
}

func (s *Server) targetSpec(si *storageInstance) TargetSpec {
	spec := TargetSpec{IQN: si.iqn, AllowAll: si.accessControlMode == "allow_all", Initiators: aclIQNs(si)}
	if si.auth.typ == "chap" && si.auth.initiatorUser != "" {
		spec.CHAP = &CHAPAccount{User: si.auth.initiatorUser, Password: si.auth.initiatorPwd}
	}
	for _, v := range si.volumes {
		spec.LUNs = append(spec.LUNs, LUNSpec{VolumeUUID: v.uuid, SizeGiB: v.size})
	}
	return spec
}

func aclIQNs(si *storageInstance) []string {
	out := make([]string, 0, len(si.acl))
	for _, p := range si.acl {
		out = append(out, strings.TrimPrefix(p, "/initiators/"))
	}
	return out
}

func (s *Server) export(c *call, ai *appInstance, si *storageInstance) *apiError {
	if s.opts.Exporter == nil {
		return nil
	}
	ctx, cancel := exportCtx(c.r)
	defer cancel()
	if err := s.opts.Exporter.Export(ctx, s.targetSpec(si)); err != nil {
		s.log.Error("exporting iSCSI target failed", "appInstance", ai.name, "storageInstance", si.name, "iqn", si.iqn, "error", err)
		return internalError("exporting storage_instance %s of %s as an iSCSI target failed: %v", si.name, ai.name, err)
	}
	return nil
}

func (s *Server) unexport(c *call, si *storageInstance) *apiError {
	if s.opts.Exporter == nil {
		return nil
	}
	ctx, cancel := exportCtx(c.r)
	defer cancel()
	if err := s.opts.Exporter.Unexport(ctx, si.iqn); err != nil {
		s.log.Error("removing iSCSI target failed", "storageInstance", si.name, "iqn", si.iqn, "error", err)
		return internalError("removing the iSCSI target of storage_instance %s failed: %v", si.name, err)
	}
	return nil
}

// syncACL pushes an online storage_instance's ACL to its target.
func (s *Server) syncACL(c *call, si *storageInstance) *apiError {
	if s.opts.Exporter == nil || si.adminState != "online" {
		return nil
	}
	ctx, cancel := exportCtx(c.r)
	defer cancel()
	if err := s.opts.Exporter.SetACL(ctx, si.iqn, si.accessControlMode == "allow_all", aclIQNs(si)); err != nil {
		s.log.Error("updating iSCSI target ACL failed", "storageInstance", si.name, "iqn", si.iqn, "error", err)
		return internalError("updating the iSCSI ACL of storage_instance %s failed: %v", si.name, err)
	}
	return nil
}

func (s *Server) growBacking(c *call, ai *appInstance, si *storageInstance, vol *volume, size int64) *apiError {
	if s.opts.Exporter == nil {
		return nil
	}
	ctx, cancel := exportCtx(c.r)
	defer cancel()
	if err := s.opts.Exporter.Grow(ctx, vol.uuid, size); err != nil {
		return internalError("growing volume %s of %s/%s failed: %v", vol.name, ai.name, si.name, err)
	}
	return nil
}

// destroyBacking frees a deleted app_instance's backing stores; failures are only logged because
// the deletion itself has happened.
func (s *Server) destroyBacking(c *call, ai *appInstance) {
	if s.opts.Exporter == nil {
		return
	}
	ctx, cancel := exportCtx(c.r)
	defer cancel()
	for _, si := range ai.storage {
		for _, v := range si.volumes {
			if err := s.opts.Exporter.Destroy(ctx, v.uuid); err != nil {
				s.log.Error("destroying backing store failed", "appInstance", ai.name, "volume", v.uuid, "error", err)
			}
		}
	}
}

package flex

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// checkOwner hands a volume only to the owner recorded on its app_instance. A claim's volume ID
// is derived from its cluster, namespace and name, so a namespace deleted and created again (a
// new UID, perhaps a new tenant) maps its claims onto the retained volumes of the old one; the
// owner recorded at first use tells them apart. It runs before this node is added to the ACL,
// so a refusal changes nothing on Datera.
//
// No recorded owner (a new volume, or one made before owners were recorded) gets this PV's
// owner recorded. Datera metadata has no compare-and-set, so the record is read back after the
// write: of two first mounts for different owners racing, the one whose write was overwritten
// sees the other owner and fails. A contract-v1 PV carries no owner and mounts as before.
func (d *Driver) checkOwner(ctx context.Context, log *slog.Logger, api DateraAPI, req *MountRequest) error {
	if !req.HasOwner {
		log.WarnContext(ctx, "the PersistentVolume has no owner options (contract v1); mounting without the owner check")
		return nil
	}
	md, err := api.GetMetadata(ctx, req.VolumeID)
	if err != nil {
		return fmt.Errorf("reading the volume's recorded owner: %w", err)
	}
	if recorded, ok := pvoptions.OwnerFromMetadata(md); ok {
		return pvoptions.CheckSameOwner(req.VolumeID, recorded, req.Owner)
	}
	if _, err := api.SetMetadata(ctx, req.VolumeID, req.Owner.Metadata()); err != nil {
		return fmt.Errorf("recording the volume's owner: %w", err)
	}
	md, err = api.GetMetadata(ctx, req.VolumeID)
	if err != nil {
		return fmt.Errorf("reading back the volume's recorded owner: %w", err)
	}
	recorded, ok := pvoptions.OwnerFromMetadata(md)
	if !ok {
		return fmt.Errorf("volume %s: the owner just recorded on Datera is missing when read back", req.VolumeID)
	}
	if err := pvoptions.CheckSameOwner(req.VolumeID, recorded, req.Owner); err != nil {
		return err
	}
	log.InfoContext(ctx, "recorded the volume's owner on Datera", "namespace", req.Owner.Namespace, "claim", req.Owner.Claim,
		"namespaceUID", req.Owner.NamespaceUID, "cluster", req.Owner.ClusterID)
	return nil
}

// Package pvoptions is the one home of the PersistentVolume contract between the programs: the
// webhook writes a Datera PV's spec.flexVolume.options (Volume.Options), the flex driver parses
// and checks them all (Parse), the scheduler extender reads volumeID and backstoreServer, and
// the reconcile loop reads volumeID, backstoreServer, tenant, accessMode and the owner. Every
// option key, its allowed values and its parsing are defined here and nowhere else, together
// with the PV name, the owner record kept on the Datera app_instance as metadata, and the
// default cluster ID.
//
// Contract version 1 (the first programs):
//
//	volumeID         Datera app_instance name, ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$   required
//	size             GiB, 1-32768                                   required unless template
//	replica          1-5
//	backstoreServer  host:port of the Datera management API (port 7718 https, 7717 http)  required
//	template         Datera app_template name
//	placementMode    hybrid | single_flash | all_flash
//	maxIops, maxBW   0 (none) up to the Datera limit; maxBW in KiB/s
//	ipPool           Datera ip_pool name
//	tenant           /root | /root/<name>
//
// Contract version 2 (this package; what the webhook writes now) adds:
//
//	accessMode      ReadWriteOnce | ReadOnlyMany          (absent: ReadWriteOnce)
//	clusterID       the cluster the PV was made in
//	claimNamespace  namespace of the claim the PV is pre-bound to
//	claimName       name of that claim
//	namespaceUID    UID of that namespace when the PV was made
//
// The programs are deployed and upgraded separately, so old and new run side by side for a
// while. A reader must accept the previous version: meeting a version 1 PV (none of the
// version 2 options), it treats it as ReadWriteOnce with no recorded owner (the driver fences
// it like any RWO volume and skips the owner comparison). A newer writer may add options: a
// reader logs the keys it does not know (Known) and goes on, since a new option may only add
// to what a volume is, never change what the known ones mean (a change of meaning takes a new
// key). A reader meeting a known key with a value it does not know (an unknown accessMode, a
// placementMode outside the list) refuses the volume instead of guessing. The wire format is
// pinned by golden tests (the webhook's PV options in pkg/mutate/testdata) so a change shows up
// in review.
package pvoptions

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Option keys (spec.flexVolume.options) added by contract version 2.
const (
	OptAccessMode     = "accessMode"
	OptClusterID      = "clusterID"
	OptClaimNamespace = "claimNamespace"
	OptClaimName      = "claimName"
	OptNamespaceUID   = "namespaceUID"
)

// Values of OptAccessMode. ReadWriteOnce (and ReadWriteOncePod, which is the same at node
// level) means one node at a time: the driver fences the volume's ACL to a single initiator.
// ReadOnlyMany means any number of nodes, every mount read-only. ReadWriteMany is never
// written: a local filesystem on one LUN must not be mounted read-write by two nodes.
const (
	AccessReadWriteOnce = "ReadWriteOnce"
	AccessReadOnlyMany  = "ReadOnlyMany"
)

// ParseAccessMode reads OptAccessMode; absent means ReadWriteOnce (contract version 1).
func ParseAccessMode(v string) (string, error) {
	switch v {
	case "", AccessReadWriteOnce:
		return AccessReadWriteOnce, nil
	case AccessReadOnlyMany:
		return AccessReadOnlyMany, nil
	}
	return "", fmt.Errorf("option %s %q: want %s or %s", OptAccessMode, clip(v), AccessReadWriteOnce, AccessReadOnlyMany)
}

// Datera app_instance metadata keys that record the owner. Datera metadata is a flat map of
// strings; keys use underscores only, as every Datera client does.
const (
	MetaCluster      = "petfabric_cluster"
	MetaNamespace    = "petfabric_namespace"
	MetaClaim        = "petfabric_claim"
	MetaNamespaceUID = "petfabric_namespace_uid"
)

// Owner is who a volume belongs to: a claim of a namespace (by UID, so a re-created namespace of
// the same name is a different owner) in one cluster.
type Owner struct {
	ClusterID, Namespace, Claim, NamespaceUID string
}

// OwnerFromOptions reads the owner options of a PV; ok is false for a version 1 PV.
func OwnerFromOptions(opts map[string]string) (o Owner, ok bool) {
	o = Owner{ClusterID: opts[OptClusterID], Namespace: opts[OptClaimNamespace], Claim: opts[OptClaimName], NamespaceUID: opts[OptNamespaceUID]}
	return o, o.NamespaceUID != "" && o.Namespace != "" && o.Claim != ""
}

// Options returns the owner as PV options.
func (o Owner) Options() map[string]string {
	return map[string]string{OptClusterID: o.ClusterID, OptClaimNamespace: o.Namespace, OptClaimName: o.Claim, OptNamespaceUID: o.NamespaceUID}
}

// Metadata returns the owner as Datera app_instance metadata.
func (o Owner) Metadata() map[string]string {
	return map[string]string{MetaCluster: o.ClusterID, MetaNamespace: o.Namespace, MetaClaim: o.Claim, MetaNamespaceUID: o.NamespaceUID}
}

// OwnerFromMetadata reads the owner recorded on an app_instance; ok is false when none is.
func OwnerFromMetadata(meta map[string]string) (o Owner, ok bool) {
	o = Owner{ClusterID: meta[MetaCluster], Namespace: meta[MetaNamespace], Claim: meta[MetaClaim], NamespaceUID: meta[MetaNamespaceUID]}
	return o, o.NamespaceUID != ""
}

// CheckSameOwner returns nil when recorded and claimed are the same owner, else an error that
// names both (names and UIDs are not secret).
func CheckSameOwner(volumeID string, recorded, claimed Owner) error {
	if recorded == claimed {
		return nil
	}
	return fmt.Errorf("volume %s belongs to claim %s/%s (namespace uid %s, cluster %q), not to claim %s/%s (namespace uid %s, cluster %q); "+
		"a volume is only ever handed to the owner recorded when it was created",
		volumeID, recorded.Namespace, recorded.Claim, recorded.NamespaceUID, recorded.ClusterID,
		claimed.Namespace, claimed.Claim, claimed.NamespaceUID, claimed.ClusterID)
}

// PVName is the PersistentVolume name for a claim: datera-<namespace>.<claim>. A namespace name
// is a DNS label (no '.'), so the first '.' splits the two and no two (namespace, claim) pairs
// share a name. When the result is longer than a DNS subdomain allows (253), the claim part is
// truncated and a hash of the full pair appended. Deterministic, so a re-created StatefulSet
// finds its PVs again.
//
// Every name has a '.', and a pod's inline volume name is a DNS label (no '.'): kubelet's
// kubernetes.io/pvOrVolumeName can equal PVName(ns, claim) only for a PersistentVolume.
func PVName(namespace, claim string) string {
	full := "datera-" + namespace + "." + claim
	if len(full) <= maxSubdomain {
		return full
	}
	sum := sha256.Sum256([]byte(namespace + "/" + claim))
	suffix := "-" + hex.EncodeToString(sum[:])[:10]
	head := strings.TrimRight(full[:maxSubdomain-len(suffix)], "-.")
	return head + suffix
}

// IsPVNameOf reports whether name is the PV name of (namespace, claim).
func IsPVNameOf(name, namespace, claim string) bool {
	return namespace != "" && claim != "" && name == PVName(namespace, claim)
}

const maxSubdomain = 253

// DefaultClusterID derives a cluster ID from the kube-system namespace's UID, which is unique
// and stable for a cluster's life: "k" and the UID's first 16 hex digits (64 bits). The result
// fits the volume ID rule (a letter first, at most 32 characters).
func DefaultClusterID(kubeSystemUID string) (string, error) {
	hexDigits := strings.ReplaceAll(strings.ToLower(kubeSystemUID), "-", "")
	if len(hexDigits) < 16 || strings.Trim(hexDigits, "0123456789abcdef") != "" {
		return "", fmt.Errorf("kube-system namespace uid %q is not a UUID", clip(kubeSystemUID))
	}
	return "k" + hexDigits[:16], nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

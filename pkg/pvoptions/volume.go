package pvoptions

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
)

// Option keys of contract version 1 (spec.flexVolume.options; every value is a string because
// FlexVolume options are map[string]string). The webhook writes them, the flex driver parses
// them all (Parse), the extender reads volumeID and backstoreServer, and the reconcile loop
// reads volumeID, backstoreServer, tenant and accessMode.
const (
	// OptVolumeID is the Datera app_instance name (ValidName); the driver also makes it a
	// file name. Required.
	OptVolumeID = "volumeID"
	// OptSize is the volume size in whole GiB (datera.MinSizeGiB to datera.MaxSizeGiB); the
	// webhook writes the claim's storage request. Required unless OptTemplate is set.
	OptSize = "size"
	// OptReplica is the replica count (datera.MinReplicaCount to MaxReplicaCount).
	OptReplica = "replica"
	// OptBackstoreServer is host:port of the Datera management API; the port says the
	// scheme (datera.EndpointForBackstore). It keys the node report. Required.
	OptBackstoreServer = "backstoreServer"
	// OptTemplate is a Datera app_template name (ValidName).
	OptTemplate = "template"
	// OptPlacementMode is hybrid, single_flash or all_flash.
	OptPlacementMode = "placementMode"
	// OptMaxIOPS and OptMaxBW (KiB/s) are performance limits, 0 or absent for none.
	OptMaxIOPS = "maxIops"
	OptMaxBW   = "maxBW"
	// OptIPPool is a Datera ip_pool name (ValidName).
	OptIPPool = "ipPool"
	// OptTenant is the Datera tenant path: /root or /root/<name>.
	OptTenant = "tenant"
	// OptFSType is not a PV option: it is the StorageClass parameter and template annotation
	// key whose value (one of FSTypes) the webhook writes to spec.flexVolume.fsType, which
	// kubelet hands the driver as kubernetes.io/fsType.
	OptFSType = "fsType"
)

// keys are every PV option key of contract version 2, in a stable order.
var keys = []string{
	OptVolumeID, OptSize, OptReplica, OptBackstoreServer, OptTemplate, OptPlacementMode,
	OptMaxIOPS, OptMaxBW, OptIPPool, OptTenant,
	OptAccessMode, OptClusterID, OptClaimNamespace, OptClaimName, OptNamespaceUID,
}

// Known reports whether key is a PV option of this contract version. A reader logs the others
// (a newer writer's additions) and goes on.
func Known(key string) bool { return slices.Contains(keys, key) }

// Placement modes (OptPlacementMode).
var placementModes = []string{string(datera.PlacementHybrid), string(datera.PlacementSingleFlash), string(datera.PlacementAllFlash)}

// PlacementModes lists the allowed OptPlacementMode values.
func PlacementModes() []string { return slices.Clone(placementModes) }

// fsTypes are the filesystems the driver makes and mounts.
var fsTypes = []string{"xfs", "ext4", "ext3"}

// FSTypes lists the allowed filesystems (OptFSType, kubernetes.io/fsType).
func FSTypes() []string { return slices.Clone(fsTypes) }

// ValidFSType reports whether fs is one of FSTypes.
func ValidFSType(fs string) bool { return slices.Contains(fsTypes, fs) }

// ValidName reports whether s is a valid Datera object name, ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$:
// the rule of OptVolumeID, OptTemplate and OptIPPool. The driver also uses a volume ID as a
// file name, so nothing outside this rule may ever be produced or accepted. A loop, not a
// regexp: the webhook runs it for every PV of every admission.
func ValidName(s string) bool {
	if len(s) < 3 || len(s) > 64 || !isLetter(s[0]) && s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !(c >= '0' && c <= '9') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

// ParseVolumeID checks OptVolumeID: required, ValidName.
func ParseVolumeID(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("option %s is required", OptVolumeID)
	}
	if !ValidName(v) {
		return "", fmt.Errorf("option %s %q is not a valid Datera volume name (want ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$)", OptVolumeID, clip(v))
	}
	return v, nil
}

// ParseSize reads OptSize in GiB; "" is 0 (absent).
func ParseSize(v string) (int64, error) {
	return parseInt(OptSize, v, datera.MinSizeGiB, datera.MaxSizeGiB)
}

// ParseReplica reads OptReplica; "" is 0 (absent: the writer's default applies).
func ParseReplica(v string) (int, error) {
	n, err := parseInt(OptReplica, v, datera.MinReplicaCount, datera.MaxReplicaCount)
	return int(n), err
}

// ParseMaxIOPS reads OptMaxIOPS; "" and "0" are no limit.
func ParseMaxIOPS(v string) (int64, error) { return parseInt(OptMaxIOPS, v, 0, datera.MaxIOPS) }

// ParseMaxBW reads OptMaxBW in KiB/s; "" and "0" are no limit.
func ParseMaxBW(v string) (int64, error) { return parseInt(OptMaxBW, v, 0, datera.MaxBandwidthKiB) }

// ParsePlacementMode checks OptPlacementMode; "" is the Datera default.
func ParsePlacementMode(v string) (string, error) {
	if v != "" && !slices.Contains(placementModes, v) {
		return "", fmt.Errorf("option %s %q: want one of %s", OptPlacementMode, clip(v), strings.Join(placementModes, ", "))
	}
	return v, nil
}

// ParseTemplate checks OptTemplate; "" is none.
func ParseTemplate(v string) (string, error) { return parseName(OptTemplate, "app_template", v) }

// ParseIPPool checks OptIPPool; "" is the default pool.
func ParseIPPool(v string) (string, error) { return parseName(OptIPPool, "ip_pool", v) }

func parseName(key, kind, v string) (string, error) {
	if v != "" && !ValidName(v) {
		return "", fmt.Errorf("option %s %q is not a valid Datera %s name (want ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$)", key, clip(v), kind)
	}
	return v, nil
}

// A writer writes the canonical form of backstoreServer and tenant (ValidBackstoreServer,
// ValidTenant); a reader also accepts the other forms it has always read (ParseBackstoreServer,
// ParseTenant), so PVs made by hand for a test (a simulator's URL) keep working.

// ValidTenant reports whether v is a tenant a writer may write: /root or /root/<name> with a
// ValidName.
func ValidTenant(v string) bool {
	if v == "/root" {
		return true
	}
	sub, ok := strings.CutPrefix(v, "/root/")
	return ok && ValidName(sub)
}

// ParseTenant reads OptTenant: "" (the credentials' own tenant), or a tenant path whose every
// part below /root is a ValidName, normalized by datera.NormalizeTenant ("team-a" reads as
// /root/team-a). A ValidTenant value reads as itself.
func ParseTenant(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	norm := datera.NormalizeTenant(v)
	for _, seg := range strings.Split(strings.TrimPrefix(norm, "/root"), "/")[1:] {
		if !ValidName(seg) {
			return "", fmt.Errorf("option %s %q is not a valid tenant path (want /root or /root/<name>)", OptTenant, clip(v))
		}
	}
	return norm, nil
}

// ValidBackstoreServer reports whether v is a backstoreServer a writer may write: host:port,
// with a port the scheme can be told from (datera.EndpointForBackstore: 7718 https, 7717
// http).
func ValidBackstoreServer(v string) bool {
	host, _, err := net.SplitHostPort(v)
	if err != nil || host == "" || strings.ContainsAny(v, "/ ") {
		return false
	}
	_, err = datera.EndpointForBackstore(v)
	return err == nil
}

// ParseBackstoreServer reads OptBackstoreServer: required, and any form
// datera.EndpointForBackstore understands (host:port as written; an http(s) URL or a host
// alone on a PV made by hand). It returns the management API's URL.
func ParseBackstoreServer(v string) (endpoint string, err error) {
	if v == "" {
		return "", fmt.Errorf("option %s is required (host:port of the Datera management API)", OptBackstoreServer)
	}
	endpoint, err = datera.EndpointForBackstore(v)
	if err != nil {
		return "", fmt.Errorf("option %s: %w", OptBackstoreServer, err)
	}
	return endpoint, nil
}

// parseInt reads an optional whole number in [lo, hi]; "" is 0.
func parseInt(key, v string, lo, hi int64) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("option %s %q: want an integer in %d-%d", key, clip(v), lo, hi)
	}
	return n, nil
}

// Volume is what a PV's options say (contract version 2). Options writes it; Parse reads and
// checks it.
type Volume struct {
	VolumeID        string
	SizeGiB         int64 // 0: absent (only with Template)
	Replica         int   // 0: absent (Datera's default)
	BackstoreServer string
	Template        string
	PlacementMode   string
	MaxIOPS         int64 // 0: no limit
	MaxBWKiB        int64 // 0: no limit
	IPPool          string
	Tenant          string
	// AccessMode is AccessReadWriteOnce or AccessReadOnlyMany.
	AccessMode string
	// Owner is the claim the PV was made for; HasOwner is false for a version 1 PV.
	Owner    Owner
	HasOwner bool
}

// Options is the PV's spec.flexVolume.options: every set field under its key (optional ones
// only when set), the owner when HasOwner.
func (v Volume) Options() map[string]string {
	opts := map[string]string{
		OptVolumeID:        v.VolumeID,
		OptBackstoreServer: v.BackstoreServer,
	}
	set := func(k, s string) {
		if s != "" {
			opts[k] = s
		}
	}
	num := func(k string, n int64) {
		if n > 0 {
			opts[k] = strconv.FormatInt(n, 10)
		}
	}
	num(OptSize, v.SizeGiB)
	num(OptReplica, int64(v.Replica))
	set(OptTemplate, v.Template)
	set(OptPlacementMode, v.PlacementMode)
	num(OptMaxIOPS, v.MaxIOPS)
	num(OptMaxBW, v.MaxBWKiB)
	set(OptIPPool, v.IPPool)
	set(OptTenant, v.Tenant)
	set(OptAccessMode, v.AccessMode)
	if v.HasOwner {
		for k, s := range v.Owner.Options() {
			opts[k] = s
		}
	}
	return opts
}

// Parse reads and checks the options of a PV, version 1 or 2 (see the package documentation).
// Keys it does not know are left for the caller (Known).
func Parse(opts map[string]string) (Volume, error) {
	var v Volume
	var err error
	if v.VolumeID, err = ParseVolumeID(opts[OptVolumeID]); err != nil {
		return v, err
	}
	if v.Template, err = ParseTemplate(opts[OptTemplate]); err != nil {
		return v, err
	}
	if v.SizeGiB, err = ParseSize(opts[OptSize]); err != nil {
		return v, err
	}
	if v.SizeGiB == 0 && v.Template == "" {
		return v, fmt.Errorf("option %s is required (GiB, %d-%d) unless %s is set", OptSize, datera.MinSizeGiB, datera.MaxSizeGiB, OptTemplate)
	}
	if v.Replica, err = ParseReplica(opts[OptReplica]); err != nil {
		return v, err
	}
	if v.PlacementMode, err = ParsePlacementMode(opts[OptPlacementMode]); err != nil {
		return v, err
	}
	if v.IPPool, err = ParseIPPool(opts[OptIPPool]); err != nil {
		return v, err
	}
	if v.MaxIOPS, err = ParseMaxIOPS(opts[OptMaxIOPS]); err != nil {
		return v, err
	}
	if v.MaxBWKiB, err = ParseMaxBW(opts[OptMaxBW]); err != nil {
		return v, err
	}
	v.BackstoreServer = opts[OptBackstoreServer]
	if _, err = ParseBackstoreServer(v.BackstoreServer); err != nil {
		return v, err
	}
	if v.Tenant, err = ParseTenant(opts[OptTenant]); err != nil {
		return v, err
	}
	if v.AccessMode, err = ParseAccessMode(opts[OptAccessMode]); err != nil {
		return v, err
	}
	v.Owner, v.HasOwner = OwnerFromOptions(opts)
	if !v.HasOwner {
		var present []string
		for _, k := range []string{OptClusterID, OptClaimNamespace, OptClaimName, OptNamespaceUID} {
			if opts[k] != "" {
				present = append(present, k)
			}
		}
		if len(present) > 0 {
			return v, fmt.Errorf("options %s, %s and %s come together (the PV's owner); this volume has only %s",
				OptClaimNamespace, OptClaimName, OptNamespaceUID, strings.Join(present, ", "))
		}
	}
	return v, nil
}

// Driver is the FlexVolume driver every Datera PV names (spec.flexVolume.driver); kubelet finds
// it at <plugin dir>/datera~iscsi/iscsi.
const Driver = "datera/iscsi"

// Labels the webhook puts on every PV of a StatefulSet pet and the extender reads to spread one
// StatefulSet's pets: the StatefulSet's name (its namespace is the claimRef's) and the ordinal.
const (
	LabelStatefulSet = "petfabric.io/statefulset"
	LabelOrdinal     = "petfabric.io/ordinal"
)

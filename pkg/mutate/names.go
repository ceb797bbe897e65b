package mutate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// validClusterID: ^[a-zA-Z_][a-zA-Z0-9_.-]{0,31}$, which leaves room in the 64-character
// volume ID (pvoptions.ValidName) for namespace, claim and hash.
func validClusterID(id string) bool {
	return id != "" && len(id) <= 32 && pvoptions.ValidName(id+"__")
}

// isDNS1123Subdomain is validation.IsDNS1123Subdomain without the regexp and the messages.
func isDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > validation.DNS1123SubdomainMaxLength {
		return false
	}
	for {
		label, rest, more := strings.Cut(s, ".")
		if !isDNS1123LabelChars(label) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// isDNS1123LabelChars: [a-z0-9]([-a-z0-9]*[a-z0-9])? of any length.
func isDNS1123LabelChars(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isLabelValue is len(validation.IsValidLabelValue(s)) == 0 without the regexp:
// (([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])? and at most 63 characters.
func isLabelValue(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > validation.LabelValueMaxLength || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// hashSuffix is a short, stable digest of s (10 hex chars = 40 bits: collisions need ~10^6
// claims with the same truncated prefix).
func hashSuffix(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

// ClaimName is the PVC name the StatefulSet controller gives ordinal n of template claim.
func ClaimName(template, statefulSet string, ordinal int) string {
	return template + "-" + statefulSet + "-" + strconv.Itoa(ordinal)
}

// ParseOrdinal extracts the ordinal from a claim name <template>-<sts>-<n>.
func ParseOrdinal(claimName, template, statefulSet string) (int, bool) {
	rest, ok := strings.CutPrefix(claimName, template+"-"+statefulSet+"-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') || strings.Trim(rest, "0123456789") != "" {
		return 0, false // only the canonical form ClaimName makes ("+1" and " 1" parse too)
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// PVName is the PersistentVolume name for a claim: pvoptions.PVName, datera-<namespace>.<claim>
// (hashed when long). Injective: a namespace cannot contain '.', so the first '.' splits the
// two, and no namespace can squat another namespace's PV name with a look-alike claim.
// Deterministic, so a re-created StatefulSet finds its PVs (and data) again.
func PVName(namespace, claim string) string { return pvoptions.PVName(namespace, claim) }

// LegacyPVName is the name contract version 1 gave a claim's PV, datera-<namespace>-<claim>
// (hashed when long). It is not injective ("team"+"a-data-db-0" and "team-a"+"data-db-0"
// share it), so it is never used for a new PV. PVs of that name still exist after an upgrade;
// they are found by their claimRef (PVClaimIndexFunc), never by this name alone.
func LegacyPVName(namespace, claim string) string {
	full := "datera-" + namespace + "-" + claim
	if isDNS1123Subdomain(full) {
		return full
	}
	suffix := "-" + hashSuffix(namespace+"/"+claim)
	head := strings.TrimRight(full[:validation.DNS1123SubdomainMaxLength-len(suffix)], "-.")
	return head + suffix
}

// PVClaimIndex is the name of the PV informer index by claimRef (PVClaimIndexFunc).
const PVClaimIndex = "petfabric.io/claim"

// ClaimKey is the PVClaimIndex key of a claim: <namespace>/<name>.
func ClaimKey(namespace, claim string) string { return namespace + "/" + claim }

// PVClaimIndexFunc is a cache.IndexFunc: a PV's spec.claimRef as ClaimKey (none when the PV
// is not pre-bound or bound). Looking a claim's PV up through it finds the PV whatever its
// name (contract version 1 or 2), so an upgrade never makes a second PV for a claim.
func PVClaimIndexFunc(obj any) ([]string, error) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return nil, fmt.Errorf("PVClaimIndexFunc: %T is not a *PersistentVolume", obj)
	}
	if ref := pv.Spec.ClaimRef; ref != nil && ref.Name != "" {
		return []string{ClaimKey(ref.Namespace, ref.Name)}, nil
	}
	return nil, nil
}

// VolumeID is the Datera app_instance name for a claim: <clusterID>_<namespace>_<claim>
// (<namespace>_<claim> without a cluster id) when valid for Datera (≤64 characters,
// [a-zA-Z0-9_.-], starting with a letter or _), else truncated to 53 characters plus "-" and a
// stable hash of the whole name.
//
// "_" separates the parts because neither a namespace nor a claim name can contain it: with
// "-", namespace "team-a" claim "data-db-0" and namespace "team" claim "a-data-db-0" would
// share one Datera volume, and a claim re-created in another namespace could mount the data a
// Retain PV left behind. A namespace starting with a digit (possible without a cluster id)
// gets a leading "_", which no other ID has at that place.
func VolumeID(clusterID, namespace, claim string) (string, error) {
	if clusterID != "" && !validClusterID(clusterID) {
		return "", fmt.Errorf("cluster id %q: want 1-32 characters of [a-zA-Z0-9_.-], starting with a letter or _", clusterID)
	}
	prefix := ""
	switch {
	case clusterID != "":
		prefix = clusterID + "_"
	case namespace == "" || !isLetter(namespace[0]):
		prefix = "_"
	}
	full := prefix + namespace + "_" + claim
	if pvoptions.ValidName(full) {
		return full, nil
	}
	const maxLen = 64
	suffix := "-" + hashSuffix(full)
	head := full
	if len(head) > maxLen-len(suffix) {
		head = head[:maxLen-len(suffix)]
	}
	if id := head + suffix; pvoptions.ValidName(id) {
		return id, nil
	}
	return "", fmt.Errorf("claim %s/%s: a Kubernetes namespace and claim name cannot make a Datera volume name", namespace, claim)
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

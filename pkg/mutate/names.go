package mutate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// volumeIDPattern is Datera's app_instance name rule; the flex driver also uses the ID as a
// file name, so nothing outside it may ever be produced.
var volumeIDPattern = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$`)

// clusterIDPattern leaves room in the 64-character volume ID for namespace, claim and hash.
var clusterIDPattern = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]{0,31}$`)

// ValidVolumeID reports whether id is a valid Datera app_instance name.
func ValidVolumeID(id string) bool { return volumeIDPattern.MatchString(id) }

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

// PVName is the PersistentVolume name for a claim: datera-<namespace>-<claim> when that is a
// valid DNS subdomain of at most 253 characters, else a truncated form with a stable hash of
// the full name. Deterministic, so a re-created StatefulSet finds its PVs (and data) again.
func PVName(namespace, claim string) string {
	full := "datera-" + namespace + "-" + claim
	if len(validation.IsDNS1123Subdomain(full)) == 0 {
		return full
	}
	// Namespace and claim names are DNS labels/subdomains already, so only length can fail.
	suffix := "-" + hashSuffix(namespace+"/"+claim)
	head := strings.TrimRight(full[:validation.DNS1123SubdomainMaxLength-len(suffix)], "-.")
	return head + suffix
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
	if clusterID != "" && !clusterIDPattern.MatchString(clusterID) {
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
	if ValidVolumeID(full) {
		return full, nil
	}
	const maxLen = 64
	suffix := "-" + hashSuffix(full)
	head := full
	if len(head) > maxLen-len(suffix) {
		head = head[:maxLen-len(suffix)]
	}
	if id := head + suffix; ValidVolumeID(id) {
		return id, nil
	}
	return "", fmt.Errorf("claim %s/%s: a Kubernetes namespace and claim name cannot make a Datera volume name", namespace, claim)
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

package mutate

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Option keys. Each may be set as a StorageClass parameter, as a claim-template annotation
// "petfabric.io/<key>" (which wins), or as a webhook default. Values are strings because
// FlexVolume options are map[string]string.
const (
	OptReplica         = "replica"
	OptFSType          = "fsType"
	OptSize            = "size" // GiB; only as an override not smaller than the request
	OptTemplate        = "template"
	OptPlacementMode   = "placementMode"
	OptMaxIOPS         = "maxIops"
	OptMaxBW           = "maxBW"
	OptIPPool          = "ipPool"
	OptTenant          = "tenant"
	OptBackstoreServer = "backstoreServer"
	// Secret of type datera/iscsi with the Datera credentials (class parameters or defaults).
	OptSecretName      = "secretName"
	OptSecretNamespace = "secretNamespace"
)

// optionKeys are every key a user may set, in a stable order.
var optionKeys = []string{
	OptReplica, OptFSType, OptSize, OptTemplate, OptPlacementMode, OptMaxIOPS, OptMaxBW,
	OptIPPool, OptTenant, OptBackstoreServer, OptSecretName, OptSecretNamespace,
}

var (
	allowedFSTypes        = []string{"xfs", "ext4", "ext3"}
	allowedPlacementModes = []string{"hybrid", "single_flash", "all_flash"}
)

// Options are the resolved, validated settings of one claim template.
type Options struct {
	Replica         int
	FSType          string
	SizeGiB         int64 // override; 0 = from the request
	Template        string
	PlacementMode   string
	MaxIOPS         int64
	MaxBW           int64 // KiB/s
	IPPool          string
	Tenant          string
	BackstoreServer string
	SecretName      string
	SecretNamespace string

	raw map[string]string // the resolved string values, for annotations and PV options
}

// ValidationError names the offending field and what is allowed.
type ValidationError struct {
	Field   string // e.g. spec.volumeClaimTemplates[0].metadata.annotations[petfabric.io/replica]
	Value   string
	Allowed string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: invalid value %q: %s", e.Field, e.Value, e.Allowed)
}

// source says where a resolved value came from, for error messages.
type source struct{ field string }

// resolveOptions merges annotations > class parameters > defaults and validates the result.
// fieldPrefix names the template in errors.
func resolveOptions(annotations, classParams, defaults map[string]string, classField, annField string) (Options, error) {
	raw := map[string]string{}
	from := map[string]source{}
	for _, k := range optionKeys {
		switch {
		case annotations[AnnotationPrefix+k] != "":
			raw[k] = annotations[AnnotationPrefix+k]
			from[k] = source{fmt.Sprintf("%s[%s%s]", annField, AnnotationPrefix, k)}
		case classParams[k] != "":
			raw[k] = classParams[k]
			from[k] = source{fmt.Sprintf("%s.parameters[%s]", classField, k)}
		case defaults[k] != "":
			raw[k] = defaults[k]
			from[k] = source{"webhook default " + k}
		}
	}
	o := Options{raw: raw}
	bad := func(k, allowed string) error {
		f := from[k].field
		if f == "" {
			f = k
		}
		return &ValidationError{Field: f, Value: raw[k], Allowed: allowed}
	}
	var err error
	if o.Replica, err = intIn(raw, OptReplica, 3, 1, 5); err != nil {
		return o, bad(OptReplica, "an integer replica count from 1 to 5")
	}
	o.FSType = or(raw[OptFSType], "xfs")
	if !slices.Contains(allowedFSTypes, o.FSType) {
		return o, bad(OptFSType, "one of "+strings.Join(allowedFSTypes, ", "))
	}
	if v, ok := raw[OptSize]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 262144 {
			return o, bad(OptSize, "a whole number of GiB from 1 to 262144")
		}
		o.SizeGiB = n
	}
	o.Template = raw[OptTemplate]
	if o.Template != "" && !ValidVolumeID(o.Template) {
		return o, bad(OptTemplate, "a Datera app_template name (3-64 characters of [a-zA-Z0-9_.-], starting with a letter or _)")
	}
	o.PlacementMode = raw[OptPlacementMode]
	if o.PlacementMode != "" && !slices.Contains(allowedPlacementModes, o.PlacementMode) {
		return o, bad(OptPlacementMode, "one of "+strings.Join(allowedPlacementModes, ", "))
	}
	if o.MaxIOPS, err = nonNegative(raw, OptMaxIOPS); err != nil {
		return o, bad(OptMaxIOPS, "a whole number ≥ 0 (0 = unlimited)")
	}
	if o.MaxBW, err = nonNegative(raw, OptMaxBW); err != nil {
		return o, bad(OptMaxBW, "a whole number of KiB/s ≥ 0 (0 = unlimited)")
	}
	o.IPPool = raw[OptIPPool]
	if o.IPPool != "" && !ValidVolumeID(o.IPPool) {
		return o, bad(OptIPPool, "a Datera ip_pool name")
	}
	o.Tenant = raw[OptTenant]
	if o.Tenant != "" && !validTenant(o.Tenant) {
		return o, bad(OptTenant, "a Datera tenant: /root or /root/<name>")
	}
	o.BackstoreServer = raw[OptBackstoreServer]
	if o.BackstoreServer == "" {
		return o, &ValidationError{Field: classField + ".parameters[backstoreServer]", Value: "", Allowed: "the host:port of the Datera management API must be set by the class or the webhook"}
	}
	if !validHostPort(o.BackstoreServer) {
		return o, bad(OptBackstoreServer, "host:port of the Datera management API")
	}
	o.SecretName, o.SecretNamespace = raw[OptSecretName], raw[OptSecretNamespace]
	if o.SecretName == "" || o.SecretNamespace == "" {
		return o, &ValidationError{Field: classField + ".parameters[secretName, secretNamespace]", Value: o.SecretNamespace + "/" + o.SecretName,
			Allowed: "the Datera credentials Secret must be named by the class or the webhook"}
	}
	return o, nil
}

// Raw returns the resolved option strings.
func (o Options) Raw() map[string]string { return o.raw }

func intIn(raw map[string]string, k string, def, lo, hi int) (int, error) {
	v, ok := raw[k]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("out of range")
	}
	return n, nil
}

func nonNegative(raw map[string]string, k string) (int64, error) {
	v, ok := raw[k]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid")
	}
	return n, nil
}

func validTenant(t string) bool {
	if t == "/root" {
		return true
	}
	sub, ok := strings.CutPrefix(t, "/root/")
	return ok && ValidVolumeID(sub)
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p < 65536
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

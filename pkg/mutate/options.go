package mutate

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
)

// Option keys. Each may be set as a StorageClass parameter, as a claim-template annotation
// "petfabric.io/<key>" (which wins), or as a webhook default — except the admin-only keys
// (adminOnlyKeys), which only the class or the webhook may set. Values are strings because
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

// ClassParamBackstore is DESIGN.md's StorageClass parameter name for the Datera management
// endpoint; it is accepted as an alias of backstoreServer (the PV option's name).
const ClassParamBackstore = "backstore"

// withBackstoreAlias returns the class parameters with "backstore" read as backstoreServer
// when the latter is not set (the map is copied only then).
func withBackstoreAlias(params map[string]string) map[string]string {
	alias := params[ClassParamBackstore]
	if alias == "" || params[OptBackstoreServer] != "" {
		return params
	}
	out := make(map[string]string, len(params))
	for k, v := range params {
		out[k] = v
	}
	out[OptBackstoreServer] = alias
	return out
}

// annotationKey maps each option key to its template annotation, built once.
var annotationKey = func() map[string]string {
	m := make(map[string]string, len(optionKeys))
	for _, k := range optionKeys {
		m[k] = AnnotationPrefix + k
	}
	return m
}()

// optionKeys are every key a user may set, in a stable order.
var optionKeys = []string{
	OptReplica, OptFSType, OptSize, OptTemplate, OptPlacementMode, OptMaxIOPS, OptMaxBW,
	OptIPPool, OptTenant, OptBackstoreServer, OptSecretName, OptSecretNamespace,
}

// adminOnlyKeys say where the Datera credentials go and which credentials and tenant are
// used: the flex driver and the reconcile loop log in to backstoreServer with the Secret's
// username and password. A user who could set them on a claim (template) could send the
// administrator's credentials to a server of their choosing, or use another namespace's
// Secret; so an annotation setting one is refused, and Apply never records them.
var adminOnlyKeys = []string{OptBackstoreServer, OptSecretName, OptSecretNamespace, OptTenant}

// AdminOnly reports whether an option key may be set only by the StorageClass or the webhook.
func AdminOnly(key string) bool { return slices.Contains(adminOnlyKeys, key) }

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

// resolveOptions merges annotations > class parameters > defaults and validates the result.
// fieldPrefix names the template in errors.
func resolveOptions(annotations, classParams, defaults map[string]string, classField, annField string) (Options, error) {
	declared := classParams
	classParams = withBackstoreAlias(classParams)
	raw := make(map[string]string, len(optionKeys))
	for _, k := range optionKeys {
		ann := annotations[annotationKey[k]]
		if AdminOnly(k) && ann != "" {
			return Options{}, &ValidationError{Field: fmt.Sprintf("%s[%s]", annField, annotationKey[k]), Value: ann,
				Allowed: "no such annotation: " + k + " is set only by the StorageClass parameters or the webhook configuration"}
		}
		switch {
		case ann != "":
			raw[k] = ann
		case classParams[k] != "":
			raw[k] = classParams[k]
		case defaults[k] != "":
			raw[k] = defaults[k]
		}
	}
	o := Options{raw: raw}
	// bad names where the offending value came from, by the same precedence; built only on
	// failure, since admission of a valid template is the hot path.
	bad := func(k, allowed string) error {
		f := k
		switch {
		case annotations[annotationKey[k]] != "":
			f = fmt.Sprintf("%s[%s]", annField, annotationKey[k])
		case k == OptBackstoreServer && declared[k] == "" && declared[ClassParamBackstore] != "":
			f = fmt.Sprintf("%s.parameters[%s]", classField, ClassParamBackstore)
		case classParams[k] != "":
			f = fmt.Sprintf("%s.parameters[%s]", classField, k)
		case defaults[k] != "":
			f = "webhook default " + k
		}
		return &ValidationError{Field: f, Value: raw[k], Allowed: allowed}
	}
	var err error
	if o.Replica, err = intIn(raw, OptReplica, 3, datera.MinReplicaCount, datera.MaxReplicaCount); err != nil {
		return o, bad(OptReplica, fmt.Sprintf("an integer replica count from %d to %d", datera.MinReplicaCount, datera.MaxReplicaCount))
	}
	o.FSType = or(raw[OptFSType], "xfs")
	if !slices.Contains(allowedFSTypes, o.FSType) {
		return o, bad(OptFSType, "one of "+strings.Join(allowedFSTypes, ", "))
	}
	if v, ok := raw[OptSize]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < datera.MinSizeGiB || n > datera.MaxSizeGiB {
			return o, bad(OptSize, fmt.Sprintf("a whole number of GiB from %d to %d", datera.MinSizeGiB, datera.MaxSizeGiB))
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
	if o.MaxIOPS, err = upTo(raw, OptMaxIOPS, datera.MaxIOPS); err != nil {
		return o, bad(OptMaxIOPS, fmt.Sprintf("a whole number from 0 to %d (0 = unlimited)", datera.MaxIOPS))
	}
	if o.MaxBW, err = upTo(raw, OptMaxBW, datera.MaxBandwidthKiB); err != nil {
		return o, bad(OptMaxBW, fmt.Sprintf("a whole number of KiB/s from 0 to %d (0 = unlimited)", datera.MaxBandwidthKiB))
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
	if !validBackstore(o.BackstoreServer) {
		return o, bad(OptBackstoreServer, fmt.Sprintf("host:port of the Datera management API, port %d (https) or %d (http)", datera.HTTPSPort, datera.HTTPPort))
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

func upTo(raw map[string]string, k string, hi int64) (int64, error) {
	v, ok := raw[k]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > hi {
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

// validBackstore: host:port as the contract says, and a port from which the readers of the
// PV (the flex driver, the reconcile loop: datera.EndpointForBackstore) can infer the scheme.
func validBackstore(s string) bool {
	host, _, err := net.SplitHostPort(s)
	if err != nil || host == "" || strings.ContainsAny(s, "/ ") {
		return false
	}
	_, err = datera.EndpointForBackstore(s)
	return err == nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

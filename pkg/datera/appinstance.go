package datera

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Defaults of CreateVolumeRequest: the values Datera's own Kubernetes drivers use.
const (
	DefaultReplicaCount = 3
	DefaultIPPool       = "default"
	DefaultCreateMode   = "kubernetes"
)

// CreateVolumeRequest describes an app_instance with one storage_instance "storage-1" holding
// one volume "volume-1", or one made from an app_template.
type CreateVolumeRequest struct {
	// Name of the app_instance (the PV's volumeID).
	Name string
	// SizeGiB is required without a template; with one it overrides the template's size
	// (template_override), and 0 keeps the template's.
	SizeGiB int64
	// ReplicaCount 1–5; 0 means 3. Ignored with a template.
	ReplicaCount int
	// PlacementMode; "" means hybrid. Ignored with a template.
	PlacementMode PlacementMode
	// IPPool is the access network IP pool; "" means "default". Ignored with a template.
	IPPool string
	// Template names an app_template to instantiate instead of the storage-1/volume-1 layout.
	Template string
	// Description is stored as the app_instance's descr.
	Description string
}

func (r *CreateVolumeRequest) normalize() error {
	if err := ValidateAppInstanceName(r.Name); err != nil {
		return err
	}
	if r.Template != "" {
		if err := ValidateName("app_template", r.Template); err != nil {
			return err
		}
		if r.SizeGiB != 0 {
			return ValidateSize(r.SizeGiB)
		}
		return nil
	}
	if err := ValidateSize(r.SizeGiB); err != nil {
		return err
	}
	if r.ReplicaCount == 0 {
		r.ReplicaCount = DefaultReplicaCount
	}
	if err := ValidateReplicaCount(r.ReplicaCount); err != nil {
		return err
	}
	switch r.PlacementMode {
	case "":
		r.PlacementMode = PlacementHybrid
	case PlacementHybrid, PlacementSingleFlash, PlacementAllFlash:
	default:
		return &ValidationError{Field: "placement_mode", Value: quote(string(r.PlacementMode)),
			Reason: "must be hybrid, single_flash or all_flash"}
	}
	if r.IPPool == "" {
		r.IPPool = DefaultIPPool
	}
	return ValidateName("ip_pool", r.IPPool)
}

// Wire bodies of POST /app_instances; field sets follow the schema (additionalProperties:false).
type (
	createAppInstanceBody struct {
		Name              string                `json:"name"`
		Descr             string                `json:"descr,omitempty"`
		CreateMode        string                `json:"create_mode"`
		AccessControlMode string                `json:"access_control_mode"`
		StorageInstances  []createStorageBody   `json:"storage_instances,omitempty"`
		AppTemplate       *pathBody             `json:"app_template,omitempty"`
		TemplateOverride  *templateOverrideBody `json:"template_override,omitempty"`
	}
	createStorageBody struct {
		Name    string             `json:"name"`
		IPPool  pathBody           `json:"ip_pool"`
		Volumes []createVolumeBody `json:"volumes"`
	}
	createVolumeBody struct {
		Name          string        `json:"name"`
		Size          int64         `json:"size"`
		ReplicaCount  int           `json:"replica_count"`
		PlacementMode PlacementMode `json:"placement_mode"`
	}
	pathBody struct {
		Path string `json:"path"`
	}
	// templateOverrideBody is keyed by names, and the API takes sizes in it as strings.
	templateOverrideBody struct {
		StorageInstances map[string]overrideSI `json:"storage_instances"`
	}
	overrideSI struct {
		Volumes map[string]overrideVolume `json:"volumes"`
	}
	overrideVolume struct {
		Size string `json:"size"`
	}
)

// CreateAppInstance creates the volume, or returns the existing one when an app_instance of that
// name and size already exists. An existing one of another size is an ErrConflict error: resize
// it explicitly instead.
func (c *Client) CreateAppInstance(ctx context.Context, req CreateVolumeRequest) (*AppInstance, error) {
	if err := req.normalize(); err != nil {
		return nil, err
	}
	// Idempotency probe first: the common case on a re-mount is that it exists.
	existing, err := c.GetAppInstance(ctx, req.Name)
	switch {
	case err == nil:
		return checked(existing, req)
	case !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("create app_instance %q: %w", req.Name, err)
	}

	body := createAppInstanceBody{
		Name: req.Name, Descr: req.Description, CreateMode: DefaultCreateMode, AccessControlMode: "deny_all",
	}
	if req.Template != "" {
		body.AppTemplate = &pathBody{Path: "/app_templates/" + req.Template}
		if req.SizeGiB > 0 {
			override, err := c.sizeOverride(ctx, req.Template, req.SizeGiB)
			if err != nil {
				return nil, fmt.Errorf("create app_instance %q: %w", req.Name, err)
			}
			body.TemplateOverride = override
		}
	} else {
		body.StorageInstances = []createStorageBody{{
			Name:   StorageInstanceName,
			IPPool: pathBody{Path: "/access_network_ip_pools/" + req.IPPool},
			Volumes: []createVolumeBody{{
				Name: VolumeName, Size: req.SizeGiB, ReplicaCount: req.ReplicaCount, PlacementMode: req.PlacementMode,
			}},
		}}
	}

	var ai AppInstance
	err = c.do(ctx, request{
		method: http.MethodPost, path: "/app_instances", body: body, out: &ai,
		resolvePath: apiPath("app_instances", req.Name),
	})
	if errors.Is(err, ErrConflict) {
		// Someone created it between our probe and our POST: same rules as the probe.
		existing, gerr := c.GetAppInstance(ctx, req.Name)
		if gerr != nil {
			return nil, fmt.Errorf("create app_instance %q: conflict, then: %w", req.Name, gerr)
		}
		return checked(existing, req)
	}
	if err != nil {
		return nil, fmt.Errorf("create app_instance %q: %w", req.Name, err)
	}
	c.log.InfoContext(ctx, "datera app_instance created", "name", req.Name, "id", ai.ID,
		"sizeGiB", ai.SizeGiB(), "template", req.Template)
	return checked(&ai, req)
}

// checked returns ai when it satisfies req.
func checked(ai *AppInstance, req CreateVolumeRequest) (*AppInstance, error) {
	if err := matchesRequest(ai, req); err != nil {
		return nil, err
	}
	return ai, nil
}

// matchesRequest decides whether an existing app_instance satisfies a create request.
func matchesRequest(ai *AppInstance, req CreateVolumeRequest) error {
	if req.SizeGiB == 0 {
		return nil // template size: anything the template made is what was asked for
	}
	if got := ai.SizeGiB(); got != req.SizeGiB {
		return fmt.Errorf("app_instance %q already exists with %d GiB, requested %d GiB (resize it instead): %w",
			req.Name, got, req.SizeGiB, ErrConflict)
	}
	return nil
}

// sizeOverride builds template_override for the template's first volume, whose names it reads
// from the template (they need not be storage-1/volume-1).
func (c *Client) sizeOverride(ctx context.Context, template string, gib int64) (*templateOverrideBody, error) {
	var t AppTemplate
	if err := c.do(ctx, request{method: http.MethodGet, path: apiPath("app_templates", template), out: &t}); err != nil {
		return nil, fmt.Errorf("reading app_template %q: %w", template, err)
	}
	if len(t.StorageTemplates) == 0 || len(t.StorageTemplates[0].VolumeTemplates) == 0 {
		return nil, fmt.Errorf("app_template %q has no volume template to override the size of: %w", template, ErrValidation)
	}
	st := t.StorageTemplates[0]
	return &templateOverrideBody{StorageInstances: map[string]overrideSI{
		st.Name: {Volumes: map[string]overrideVolume{
			st.VolumeTemplates[0].Name: {Size: strconv.FormatInt(gib, 10)},
		}},
	}}, nil
}

// GetAppInstance reads an app_instance by name (or id).
func (c *Client) GetAppInstance(ctx context.Context, name string) (*AppInstance, error) {
	if err := ValidateAppInstanceName(name); err != nil {
		return nil, err
	}
	var ai AppInstance
	if err := c.do(ctx, request{method: http.MethodGet, path: apiPath("app_instances", name), out: &ai}); err != nil {
		return nil, fmt.Errorf("get app_instance %q: %w", name, err)
	}
	return &ai, nil
}

// SetAdminState sets an app_instance online or offline. force overrides the server's warnings,
// e.g. offlining while initiators are logged in. Setting the current state again is harmless.
func (c *Client) SetAdminState(ctx context.Context, name string, state AdminState, force bool) (*AppInstance, error) {
	if err := ValidateAppInstanceName(name); err != nil {
		return nil, err
	}
	if state != Online && state != Offline {
		return nil, &ValidationError{Field: "admin_state", Value: quote(string(state)), Reason: "must be online or offline"}
	}
	body := map[string]any{"admin_state": state}
	if force {
		body["force"] = true
	}
	var ai AppInstance
	if err := c.do(ctx, request{method: http.MethodPut, path: apiPath("app_instances", name), body: body, out: &ai}); err != nil {
		return nil, fmt.Errorf("set app_instance %q %s: %w", name, state, err)
	}
	c.log.InfoContext(ctx, "datera admin_state set", "name", name, "state", state, "force", force)
	return &ai, nil
}

// WaitAvailable polls (Config.PollInterval) until the volume's storage_instance reports op_state
// "available" with an IQN and portal IPs, and returns the app_instance. It fails fast with
// ErrNotReady when the app_instance is offline, and otherwise waits as long as ctx allows.
func (c *Client) WaitAvailable(ctx context.Context, name string) (*AppInstance, error) {
	for {
		ai, err := c.GetAppInstance(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("wait for %q: %w", name, err)
		}
		if ai.AdminState == Offline {
			return nil, fmt.Errorf("wait for %q: app_instance is offline: %w", name, ErrNotReady)
		}
		if si, _, ok := ai.Volume(); ok && si.OpState == OpStateAvailable && si.Access.IQN != "" && len(si.Access.IPs) > 0 {
			return ai, nil
		}
		if err := sleep(ctx, c.pollEvery); err != nil {
			return nil, fmt.Errorf("wait for %q to become available: %w", name, err)
		}
	}
}

// Resize grows the volume to newGiB. The same size is a no-op; a smaller one is a validation
// error (Datera volumes only grow). It works online; the node must grow the filesystem.
func (c *Client) Resize(ctx context.Context, name string, newGiB int64) (*AppInstance, error) {
	if err := ValidateSize(newGiB); err != nil {
		return nil, err
	}
	ai, err := c.GetAppInstance(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("resize: %w", err)
	}
	si, vol, ok := ai.Volume()
	if !ok {
		return nil, fmt.Errorf("resize %q: app_instance has no volume: %w", name, ErrBadResponse)
	}
	switch {
	case newGiB == vol.Size:
		return ai, nil
	case newGiB < vol.Size:
		return nil, &ValidationError{Field: "size", Value: newGiB,
			Reason: fmt.Sprintf("volume %q is %d GiB and cannot shrink", name, vol.Size)}
	}
	path := apiPath("app_instances", name, "storage_instances", si.Name, "volumes", vol.Name)
	if err := c.do(ctx, request{method: http.MethodPut, path: path, body: map[string]int64{"size": newGiB}}); err != nil {
		return nil, fmt.Errorf("resize %q to %d GiB: %w", name, newGiB, err)
	}
	c.log.InfoContext(ctx, "datera volume resized", "name", name, "fromGiB", vol.Size, "toGiB", newGiB)
	return c.GetAppInstance(ctx, name)
}

// DeleteAppInstance takes the app_instance offline (forced) and deletes it. A missing one is success.
func (c *Client) DeleteAppInstance(ctx context.Context, name string) error {
	if err := ValidateAppInstanceName(name); err != nil {
		return err
	}
	if _, err := c.SetAdminState(ctx, name, Offline, true); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete app_instance %q: %w", name, err)
	}
	err := c.do(ctx, request{method: http.MethodDelete, path: apiPath("app_instances", name), body: map[string]bool{"force": true}})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete app_instance %q: %w", name, err)
	}
	c.log.InfoContext(ctx, "datera app_instance deleted", "name", name)
	return nil
}

// SetPerformancePolicy sets the volume's limits (0 = unlimited, bandwidth in KiB/s), creating
// the policy or replacing an existing one.
func (c *Client) SetPerformancePolicy(ctx context.Context, name string, p PerformancePolicy) (*PerformancePolicy, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	ai, err := c.GetAppInstance(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("set performance policy: %w", err)
	}
	si, vol, ok := ai.Volume()
	if !ok {
		return nil, fmt.Errorf("set performance policy of %q: app_instance has no volume: %w", name, ErrBadResponse)
	}
	path := apiPath("app_instances", name, "storage_instances", si.Name, "volumes", vol.Name, "performance_policy")
	body := p
	body.Path = ""
	var out PerformancePolicy
	err = c.do(ctx, request{method: http.MethodPost, path: path, body: body, out: &out})
	if errors.Is(err, ErrConflict) {
		err = c.do(ctx, request{method: http.MethodPut, path: path, body: body, out: &out})
	}
	if err != nil {
		return nil, fmt.Errorf("set performance policy of %q: %w", name, err)
	}
	return &out, nil
}

func (p PerformancePolicy) validate() error {
	limits := []struct {
		field string
		value int64
		max   int64
		unit  string
	}{
		{"total_iops_max", p.TotalIOPSMax, MaxIOPS, ""},
		{"read_iops_max", p.ReadIOPSMax, MaxIOPS, ""},
		{"write_iops_max", p.WriteIOPSMax, MaxIOPS, ""},
		{"total_bandwidth_max", p.TotalBandwidthMax, MaxBandwidthKiB, " KiB/s"},
		{"read_bandwidth_max", p.ReadBandwidthMax, MaxBandwidthKiB, " KiB/s"},
		{"write_bandwidth_max", p.WriteBandwidthMax, MaxBandwidthKiB, " KiB/s"},
	}
	for _, l := range limits {
		if l.value < 0 || l.value > l.max {
			return &ValidationError{Field: l.field, Value: l.value,
				Reason: fmt.Sprintf("must be 0 (unlimited) to %d%s", l.max, l.unit)}
		}
	}
	return nil
}

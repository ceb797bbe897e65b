package fake

import (
	"fmt"
	"sort"
	"strings"
)

// AppTemplate is an app_template to preload with Server.AddAppTemplate (or POST /app_templates).
type AppTemplate struct {
	Name             string
	Descr            string
	StorageTemplates []StorageTemplate
}

// StorageTemplate is the storage_instance part of an AppTemplate.
type StorageTemplate struct {
	Name string
	// IPPool names the access network IP pool ("" means "default").
	IPPool          string
	VolumeTemplates []VolumeTemplate
}

// VolumeTemplate is the volume part of an AppTemplate.
type VolumeTemplate struct {
	Name    string
	SizeGiB int64
	// ReplicaCount 0 means 3; PlacementMode "" means hybrid.
	ReplicaCount  int
	PlacementMode string
}

type (
	createTemplateBody struct {
		Name             *string               `json:"name"`
		Descr            *string               `json:"descr"`
		StorageTemplates []storageTemplateBody `json:"storage_templates"`
		SnapshotPolicies []any                 `json:"snapshot_policies"`
	}
	storageTemplateBody struct {
		Name            *string              `json:"name"`
		IPPool          *pathRef             `json:"ip_pool"`
		VolumeTemplates []volumeTemplateBody `json:"volume_templates"`
		Auth            *authBody            `json:"auth"`
	}
	volumeTemplateBody struct {
		Name          *string `json:"name"`
		Size          *int64  `json:"size"`
		ReplicaCount  *int64  `json:"replica_count"`
		PlacementMode *string `json:"placement_mode"`
	}
)

// maxTemplateSize is the API's volume_template size limit.
const maxTemplateSize = 262144

// AddAppTemplate creates an app_template in a tenant, validated as POST /app_templates is.
func (s *Server) AddAppTemplate(tenantPath string, t AppTemplate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ten := s.tenants[tenantPath]
	if ten == nil {
		return fmt.Errorf("fake: tenant %q does not exist", tenantPath)
	}
	tmpl := &appTemplate{name: t.Name, descr: t.Descr}
	for _, st := range t.StorageTemplates {
		pool := st.IPPool
		if pool == "" {
			pool = "default"
		}
		sto := storageTemplate{name: st.Name, ipPool: pool}
		for _, vt := range st.VolumeTemplates {
			vto := volumeTemplate{name: vt.Name, size: vt.SizeGiB, replicaCount: vt.ReplicaCount, placementMode: vt.PlacementMode}
			if vto.replicaCount == 0 {
				vto.replicaCount = 3
			}
			if vto.placementMode == "" {
				vto.placementMode = "hybrid"
			}
			sto.volumes = append(sto.volumes, vto)
		}
		tmpl.storage = append(tmpl.storage, sto)
	}
	if err := s.checkTemplate(ten, tmpl); err != nil {
		return fmt.Errorf("fake: app_template %q: %s", t.Name, err.message+" "+strings.Join(err.errors, "; "))
	}
	ten.templates[tmpl.name] = tmpl
	return nil
}

func (s *Server) checkTemplate(t *tenant, tmpl *appTemplate) *apiError {
	var v checks
	v.pattern("name", tmpl.name, reName)
	if len(tmpl.storage) == 0 {
		v = append(v, "storage_templates: at least one is required")
	}
	for i, st := range tmpl.storage {
		v.pattern(fmt.Sprintf("storage_templates[%d].name", i), st.name, reName)
		for j, vt := range st.volumes {
			f := fmt.Sprintf("storage_templates[%d].volume_templates[%d]", i, j)
			v.pattern(f+".name", vt.name, reName)
			v.rangeInt(f+".size", vt.size, minSize, maxTemplateSize)
			v.rangeInt(f+".replica_count", int64(vt.replicaCount), minReplica, maxReplica)
			v.enum(f+".placement_mode", vt.placementMode, placementModes)
		}
		if !s.pools[st.ipPool] {
			return notFound("access_network_ip_pool %s does not exist", st.ipPool)
		}
	}
	if err := v.err(); err != nil {
		return err
	}
	if t.templates[tmpl.name] != nil {
		return conflict("app_template %s already exists", tmpl.name)
	}
	return nil
}

func (s *Server) findTemplate(tenantPath, name string) *appTemplate {
	for _, tp := range visibleTenants(tenantPath) {
		if t := s.tenants[tp]; t != nil && t.templates[name] != nil {
			return t.templates[name]
		}
	}
	return nil
}

func (s *Server) templateUsers(t *appTemplate) []*appInstance {
	var out []*appInstance
	for _, ten := range s.tenants {
		for _, id := range ten.order {
			if ai := ten.appInstances[id]; ai.templatePath == "/app_templates/"+t.name {
				out = append(out, ai)
			}
		}
	}
	return out
}

func (s *Server) listTemplates(c *call) result {
	names := make([]string, 0, len(c.t.templates))
	for n := range c.t.templates {
		names = append(names, n)
	}
	sort.Strings(names)
	items := make([]any, 0, len(names))
	for _, n := range names {
		t := c.t.templates[n]
		items = append(items, renderTemplate(t, s.templateUsers(t)))
	}
	return list(c, "/app_templates", items)
}

func (s *Server) getTemplate(c *call) result {
	name := c.r.PathValue("name")
	t := s.findTemplate(c.t.path, name)
	if t == nil {
		return fail(notFound("app_template %s does not exist", name))
	}
	return ok("/app_templates/"+t.name, renderTemplate(t, s.templateUsers(t)))
}

func (s *Server) createTemplate(c *call) result {
	var b createTemplateBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	v.required("name", b.Name != nil)
	for i, st := range b.StorageTemplates {
		v.required(fmt.Sprintf("storage_templates[%d].name", i), st.Name != nil)
		if st.Auth != nil {
			v.authBody(fmt.Sprintf("storage_templates[%d].auth", i), st.Auth, true)
		}
		for j, vt := range st.VolumeTemplates {
			f := fmt.Sprintf("storage_templates[%d].volume_templates[%d]", i, j)
			v.required(f+".name", vt.Name != nil)
			v.required(f+".size", vt.Size != nil)
		}
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	if len(b.SnapshotPolicies) > 0 {
		return fail(invalidRequest("snapshot_policies are not supported by this simulator"))
	}
	tmpl := &appTemplate{name: *b.Name}
	if b.Descr != nil {
		tmpl.descr = *b.Descr
	}
	for _, st := range b.StorageTemplates {
		sto := storageTemplate{name: *st.Name, ipPool: "default"}
		if st.IPPool != nil {
			pool, err := s.poolFromPath(st.IPPool)
			if err != nil {
				return fail(err)
			}
			sto.ipPool = pool
		}
		for _, vt := range st.VolumeTemplates {
			vto := volumeTemplate{name: *vt.Name, size: *vt.Size, replicaCount: 3, placementMode: "hybrid"}
			if vt.ReplicaCount != nil {
				vto.replicaCount = int(*vt.ReplicaCount)
			}
			if vt.PlacementMode != nil {
				vto.placementMode = *vt.PlacementMode
			}
			sto.volumes = append(sto.volumes, vto)
		}
		tmpl.storage = append(tmpl.storage, sto)
	}
	if err := s.checkTemplate(c.t, tmpl); err != nil {
		return fail(err)
	}
	c.t.templates[tmpl.name] = tmpl
	return ok("/app_templates/"+tmpl.name, renderTemplate(tmpl, nil))
}

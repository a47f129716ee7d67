package appapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"stellar.dev/api/client"
)

// Client is a typed client of appd.sock.
type Client struct {
	c *client.Client
}

// New wraps a base client pointed at stellar-appd.
func New(c *client.Client) *Client { return &Client{c: c} }

func ifMatch(v string) http.Header {
	h := http.Header{}
	if v != "" {
		h.Set("If-Match", v)
	}
	return h
}

// Create stores a new app; it fails with ErrAlreadyExists if the name is taken.
func (a *Client) Create(ctx context.Context, app App) (PutResult, error) {
	var res PutResult
	if err := a.c.Do(ctx, http.MethodPost, "/v1/apps", app, &res); err != nil {
		return PutResult{}, fmt.Errorf("create app %s: %w", app.Name, err)
	}
	return res, nil
}

// Update replaces an app's spec; with version set it fails with a conflict
// unless the app is still at that version.
func (a *Client) Update(ctx context.Context, app App, version string) (PutResult, error) {
	var res PutResult
	if _, err := a.c.Call(ctx, client.Request{Method: http.MethodPut, Path: "/v1/apps/" + url.PathEscape(app.Name), Header: ifMatch(version), In: app, Out: &res}); err != nil {
		return PutResult{}, fmt.Errorf("update app %s: %w", app.Name, err)
	}
	return res, nil
}

// List lists the apps.
func (a *Client) List(ctx context.Context) ([]AppSummary, error) {
	var l []AppSummary
	if err := a.c.Do(ctx, http.MethodGet, "/v1/apps", nil, &l); err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	return l, nil
}

// Get reads an app with its instances.
func (a *Client) Get(ctx context.Context, name string) (AppStatus, error) {
	var s AppStatus
	if err := a.c.Do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(name), nil, &s); err != nil {
		return AppStatus{}, fmt.Errorf("inspect app %s: %w", name, err)
	}
	return s, nil
}

// Delete removes an app; its instances stop everywhere.
func (a *Client) Delete(ctx context.Context, name, version string) error {
	if _, err := a.c.Call(ctx, client.Request{Method: http.MethodDelete, Path: "/v1/apps/" + url.PathEscape(name), Header: ifMatch(version)}); err != nil {
		return fmt.Errorf("delete app %s: %w", name, err)
	}
	return nil
}

// Restart restarts an app's instances (rolling), or one service's.
func (a *Client) Restart(ctx context.Context, name, service string) (PutResult, error) {
	p := "/v1/apps/" + url.PathEscape(name) + "/restart"
	if service != "" {
		p = "/v1/apps/" + url.PathEscape(name) + "/services/" + url.PathEscape(service) + "/restart"
	}
	var res PutResult
	if err := a.c.Do(ctx, http.MethodPost, p, nil, &res); err != nil {
		return PutResult{}, fmt.Errorf("restart app %s: %w", name, err)
	}
	return res, nil
}

// Scale sets a service's instance count; with version set it fails with a
// conflict unless the app is still at that version.
func (a *Client) Scale(ctx context.Context, name, service string, n int, version string) (PutResult, error) {
	var res PutResult
	p := "/v1/apps/" + url.PathEscape(name) + "/services/" + url.PathEscape(service) + "/scale"
	if _, err := a.c.Call(ctx, client.Request{Method: http.MethodPost, Path: p, Header: ifMatch(version), In: Scale{Instances: n}, Out: &res}); err != nil {
		return PutResult{}, fmt.Errorf("scale %s/%s: %w", name, service, err)
	}
	return res, nil
}

// Logs streams an app's log lines (service may be empty) to fn.
func (a *Client) Logs(ctx context.Context, name, service string, follow bool, since string, fn func(LogLine) error) error {
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if follow {
		q.Set("follow", "true")
	}
	if since != "" {
		q.Set("since", since)
	}
	err := a.c.WithTimeout(0).Watch(ctx, "/v1/apps/"+url.PathEscape(name)+"/logs?"+q.Encode(), func(raw json.RawMessage) error {
		var l LogLine
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("decode log line: %w", err)
		}
		return fn(l)
	})
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read logs of %s: %w", name, err)
	}
	return nil
}

// ImportImage sends an OCI or Docker archive; it returns the imported images.
func (a *Client) ImportImage(ctx context.Context, archive io.Reader) ([]Image, error) {
	var imgs []Image
	if _, err := a.c.WithTimeout(0).Call(ctx, client.Request{Method: http.MethodPost, Path: "/v1/images/import", In: archive, Out: &imgs}); err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	return imgs, nil
}

// Images lists this node's images.
func (a *Client) Images(ctx context.Context) ([]Image, error) {
	var imgs []Image
	if err := a.c.Do(ctx, http.MethodGet, "/v1/images", nil, &imgs); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return imgs, nil
}

// RemoveImage removes an image from this node.
func (a *Client) RemoveImage(ctx context.Context, ref string) error {
	if err := a.c.Do(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(ref), nil, nil); err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// SetSchedule cordons, drains or uncordons a node (state Cordoned, Drained
// or Schedulable).
func (a *Client) SetSchedule(ctx context.Context, node, state string) error {
	if err := a.c.Do(ctx, http.MethodPut, "/v1/nodes/"+url.PathEscape(node)+"/schedule", Schedule{State: state}, nil); err != nil {
		return fmt.Errorf("set schedule of %s: %w", node, err)
	}
	return nil
}

package proxyapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"stellar.dev/api/client"
)

// Client is a typed client of proxyd.sock.
type Client struct {
	c *client.Client
}

// New wraps a base client pointed at stellar-proxyd.
func New(c *client.Client) *Client { return &Client{c: c} }

// Backends lists every backend of every route; host filters when not empty.
func (p *Client) Backends(ctx context.Context, host string) ([]Backend, error) {
	path := "/v1/backends"
	if host != "" {
		path += "?host=" + url.QueryEscape(host)
	}
	var bs []Backend
	if err := p.c.Do(ctx, http.MethodGet, path, nil, &bs); err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	return bs, nil
}

// Status reads the proxy's route status.
func (p *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	if err := p.c.Do(ctx, http.MethodGet, "/v1/status", nil, &s); err != nil {
		return Status{}, fmt.Errorf("read proxy status: %w", err)
	}
	return s, nil
}

// Host reads the settings of host.
func (p *Client) Host(ctx context.Context, host string) (HostSettings, error) {
	var s HostSettings
	if err := p.c.Do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host), nil, &s); err != nil {
		return HostSettings{}, fmt.Errorf("read settings of %s: %w", host, err)
	}
	return s, nil
}

// SetHost writes the settings of host to the cluster state.
func (p *Client) SetHost(ctx context.Context, host string, s HostSettings) error {
	if err := p.c.Do(ctx, http.MethodPut, "/v1/hosts/"+url.PathEscape(host), s, nil); err != nil {
		return fmt.Errorf("set settings of %s: %w", host, err)
	}
	return nil
}

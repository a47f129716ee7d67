package dnsapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"stellar.dev/api/client"
)

// Client is a typed client of dnsd.sock.
type Client struct {
	c *client.Client
}

// New wraps a base client pointed at stellar-dnsd.
func New(c *client.Client) *Client { return &Client{c: c} }

// Records lists the records: source "custom", "service" or "" for both.
func (d *Client) Records(ctx context.Context, source string) ([]Record, error) {
	path := "/v1/records"
	if source != "" {
		path += "?source=" + url.QueryEscape(source)
	}
	var l RecordList
	if err := d.c.Do(ctx, http.MethodGet, path, nil, &l); err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	return l.Records, nil
}

// Create adds a custom record and returns it as stored.
func (d *Client) Create(ctx context.Context, r Record) (Record, error) {
	var out Record
	if err := d.c.Do(ctx, http.MethodPost, "/v1/records", r, &out); err != nil {
		return Record{}, fmt.Errorf("create record %s %s: %w", r.Name, r.Type, err)
	}
	return out, nil
}

// Delete removes the custom records of name, only those of type typ when
// it is not empty.
func (d *Client) Delete(ctx context.Context, name, typ string) ([]Record, error) {
	path := "/v1/records/" + url.PathEscape(NormalizeName(name))
	if typ != "" {
		path += "?type=" + url.QueryEscape(typ)
	}
	var res DeleteResult
	if err := d.c.Do(ctx, http.MethodDelete, path, nil, &res); err != nil {
		return nil, fmt.Errorf("delete record %s: %w", name, err)
	}
	return res.Deleted, nil
}

// Status reports the zone's state.
func (d *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	if err := d.c.Do(ctx, http.MethodGet, "/v1/status", nil, &s); err != nil {
		return Status{}, fmt.Errorf("dns status: %w", err)
	}
	return s, nil
}

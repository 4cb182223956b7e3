package mcpbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/protocol"
)

// schemaOptions infers tool schemas: a json.RawMessage (a payload) is any
// JSON value, not the array of bytes reflection would see.
func schemaOptions() *jsonschema.ForOptions {
	return &jsonschema.ForOptions{TypeSchemas: map[reflect.Type]*jsonschema.Schema{
		reflect.TypeFor[json.RawMessage](): {Description: "any JSON value"},
	}}
}

// handler is a tool's implementation: it gets the arguments, already checked
// against the tool's input schema, and returns the tool's result.
type handler[In, Out any] func(ctx context.Context, in In) (Out, error)

// addTool adds tool t, whose input schema is inferred from In (adjusted by
// tune, if any) and output schema from Out, to srv.
//
// It does what mcp.AddTool does, except that arguments that break the input
// schema are a tool error with a bus code (invalid_frame: a field missing or
// of the wrong type, as for a frame), like every other tool error, rather
// than the SDK's plain text.
func addTool[In, Out any](srv *mcp.Server, t *mcp.Tool, tune func(*jsonschema.Schema), h handler[In, Out]) error {
	in, err := jsonschema.For[In](schemaOptions())
	if err != nil {
		return fmt.Errorf("mcpbus: tool %s: input schema: %w", t.Name, err)
	}
	if tune != nil {
		tune(in)
	}
	resolved, err := in.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
	if err != nil {
		return fmt.Errorf("mcpbus: tool %s: input schema: %w", t.Name, err)
	}
	out, err := jsonschema.For[Out](schemaOptions())
	if err != nil {
		return fmt.Errorf("mcpbus: tool %s: output schema: %w", t.Name, err)
	}
	t.InputSchema, t.OutputSchema = in, out
	srv.AddTool(t, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		raw := req.Params.Arguments
		args := map[string]any{}
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &args); err != nil {
				return argumentError(err), nil
			}
		}
		if err := resolved.Validate(args); err != nil {
			return argumentError(err), nil
		}
		var v In
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &v); err != nil {
				return argumentError(err), nil
			}
		}
		res, err := h(ctx, v)
		if err != nil {
			return toolError(codeOf(err), err.Error()), nil
		}
		data, err := json.Marshal(res)
		if err != nil {
			return toolError(protocol.CodeInternal, "mcpbus: encode result: "+err.Error()), nil
		}
		return &mcp.CallToolResult{
			StructuredContent: json.RawMessage(data),
			Content:           []mcp.Content{&mcp.TextContent{Text: string(data)}},
		}, nil
	})
	return nil
}

// ToolError is the text of a tool error result: a JSON object with the
// bus's error code (see PROTOCOL.md) and a message for people.
type ToolError struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

// toolError returns a tool error result with code and msg.
func toolError(code, msg string) *mcp.CallToolResult {
	data, _ := json.Marshal(ToolError{Code: code, Error: msg}) // two strings always encode
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: string(data)}}}
}

// argumentError is the tool error for arguments that break the schema.
func argumentError(err error) *mcp.CallToolResult {
	return toolError(protocol.CodeInvalidFrame, "mcpbus: invalid arguments: "+err.Error())
}

// codeOf returns the bus's code for err: the daemon's own code for an error
// it answered with, else the code of the sentinel err wraps.
func codeOf(err error) string {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, client.ErrClosed):
		return protocol.CodeClosed
	case errors.Is(err, context.DeadlineExceeded):
		return protocol.CodeRequestTimeout
	}
	return protocol.CodeOf(err)
}

// bound sets the bounds and default of integer property name of s.
func bound(s *jsonschema.Schema, name string, lo, hi, def int64) {
	p := s.Properties[name]
	p.Type, p.Types = "integer", nil
	l, h := float64(lo), float64(hi)
	p.Minimum, p.Maximum = &l, &h
	if def >= lo {
		p.Default = json.RawMessage(fmt.Sprint(def))
	}
}

// oneOf restricts string property name of s to values.
func oneOf(s *jsonschema.Schema, name string, values ...string) {
	p := s.Properties[name]
	for _, v := range values {
		p.Enum = append(p.Enum, v)
	}
}

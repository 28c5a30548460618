// The parsed form of a template: expressions and statements as the interpreter walks them.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/value.h"

namespace redhare::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind : std::uint8_t {
  Const,    // value
  Name,     // name
  List,     // children: items
  Tuple,    // children: items
  Dict,     // children: key, value, key, value...
  Attr,     // children[0].name
  Item,     // children[0][children[1]]
  Slice,    // children: start, stop, step (each may be null); only as an Item's index
  Call,     // children[0](children[1..], kwargs)
  Filter,   // children[0] | name(children[1..], kwargs); children[0] null inside filter blocks
  Test,     // children[0] is [not] name(children[1..], kwargs); negated
  Not,      // not children[0]
  Neg,      // -children[0]
  Pos,      // +children[0]
  And,      // children[0] and children[1]
  Or,       // children[0] or children[1]
  Binary,   // children[0] op children[1] for + - * / // % ** ~
  Compare,  // children[0] ops[0] children[1] ops[1] children[2]...
  Cond,     // children[1] if children[0] else children[2] (children[2] may be null)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  int column = 0;
  int depth = 1;  // of the tree below, see the parser's kMaxExprDepth
  Value value;
  std::string name;  // Name, Attr, Filter, Test; the operator of a Binary
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // Compare
  bool negated = false;          // Test
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind : std::uint8_t {
  Text,         // text
  Output,       // {{ expr }}
  If,           // branches (cond, body); else_body
  For,          // targets in expr [if cond]: body; else_body
  Set,          // targets (or namespace target.attr) = expr
  SetBlock,     // {% set target | filter %}body{% endset %}; filter chain in expr (may be null)
  Macro,        // name(params=defaults): body
  CallBlock,    // {% call(params) expr %}body{% endcall %}
  FilterBlock,  // {% filter expr %}body{% endfilter %}
  Break,
  Continue,
  Generation,  // transformers' {% generation %}: renders its body
  With,        // {% with params[i] = defaults[i], ... %}body{% endwith %}
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  int column = 0;
  std::string text;
  std::string name;  // Macro name; Set namespace attribute when targeting ns.attr
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  bool tuple_target = false;  // `for a, in ...` unpacks even a single name
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // aligned to the tail of params
  bool namespace_target = false;
  // Macro: whether its body reads varargs / kwargs / caller; jinja2 rejects extra positional or
  // keyword arguments to macros that do not.
  bool uses_varargs = false;
  bool uses_kwargs = false;
  bool uses_caller = false;
};

struct Program {
  Body body;
};

}  // namespace redhare::jinja

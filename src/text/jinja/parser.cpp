#include "text/jinja/parser.h"

#include <algorithm>
#include <initializer_list>
#include <string_view>

#include "text/jinja/template.h"

namespace redhare::jinja {

namespace {

// Expressions and blocks nest by recursion; a fuzzer (or a hostile template) can nest deep enough
// to exhaust the stack, and no real template comes near this.
constexpr int kMaxNesting = 96;
// Operator and filter chains (`a ~ b ~ c ...`, `x|f|g|...`) are parsed by loops, not recursion,
// but evaluating them recurses once per link; bound the tree depth too.
constexpr int kMaxExprDepth = 400;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Program run() {
    Program program;
    program.body = parse_body({});
    if (cur().type != TokenType::End) {
      fail_at(cur(), std::string("unexpected '") + describe(cur()) + "'");
    }
    return program;
  }

 private:
  // ---- token stream ------------------------------------------------------------------------

  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek(std::size_t ahead = 1) const {
    const std::size_t i = pos_ + ahead;
    return i < tokens_.size() ? tokens_[i] : tokens_.back();
  }
  const Token& next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool is_op(std::string_view op) const {
    return cur().type == TokenType::Operator && cur().text == op;
  }
  bool is_name(std::string_view name) const {
    return cur().type == TokenType::Name && cur().text == name;
  }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op))
      fail_at(cur(),
              std::string("expected '") + std::string(op) + "', got '" + describe(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().type != TokenType::Name)
      fail_at(cur(), std::string("expected a name, got '") + describe(cur()) + "'");
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != TokenType::BlockEnd) {
      fail_at(cur(), std::string("expected end of statement block, got '") + describe(cur()) + "'");
    }
    next();
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::End:
        return "end of template";
      case TokenType::Text:
        return "template data";
      case TokenType::String:
        return "string";
      default:
        return t.text;
    }
  }

  [[noreturn]] static void fail_at(const Token& t, const std::string& message) {
    throw TemplateError(message, t.line, t.column);
  }

  struct DepthGuard {
    explicit DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > kMaxNesting) fail_at(parser.cur(), "template nests too deeply");
    }
    ~DepthGuard() { --parser.depth_; }
    Parser& parser;
  };

  // Records `e`'s depth from its (already sized) children and enforces kMaxExprDepth.
  ExprPtr sized(ExprPtr e) {
    int inner = 0;
    for (const auto& c : e->children) {
      if (c) inner = std::max(inner, c->depth);
    }
    for (const auto& [k, v] : e->kwargs) inner = std::max(inner, v->depth);
    e->depth = inner + 1;
    if (e->depth > kMaxExprDepth) fail_at(cur(), "expression nests too deeply");
    return e;
  }

  ExprPtr make(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  StmtPtr make_stmt(StmtKind kind, const Token& at) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = at.line;
    s->column = at.column;
    return s;
  }

  // ---- statements --------------------------------------------------------------------------

  // Parses until a block tag whose name is in `end_names`; leaves the stream on that name.
  Body parse_body(std::initializer_list<std::string_view> end_names) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::End) {
        if (end_names.size()) {
          fail_at(t, std::string("unexpected end of template, expected '") +
                         std::string(*end_names.begin()) + "'");
        }
        return body;
      }
      if (t.type == TokenType::Text) {
        auto s = make_stmt(StmtKind::Text, t);
        s->text = next().text;
        body.push_back(std::move(s));
      } else if (t.type == TokenType::VariableBegin) {
        auto s = make_stmt(StmtKind::Output, t);
        next();
        s->expr = parse_tuple(false, true, {}, false);
        if (cur().type != TokenType::VariableEnd) {
          fail_at(cur(),
                  std::string("expected end of print statement, got '") + describe(cur()) + "'");
        }
        next();
        body.push_back(std::move(s));
      } else if (t.type == TokenType::BlockBegin) {
        const Token& name = peek();
        if (name.type != TokenType::Name) fail_at(name, "expected a statement name");
        for (auto end : end_names) {
          if (name.text == end) {
            next();  // leaves the stream on the tag name
            return body;
          }
        }
        next();
        body.push_back(parse_statement());
      } else {
        fail_at(t, std::string("unexpected '") + describe(t) + "'");
      }
    }
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    const std::string& n = t.text;
    if (n == "if") return parse_if();
    if (n == "for") return parse_for();
    if (n == "set") return parse_set();
    if (n == "macro") return parse_macro();
    if (n == "call") return parse_call_block();
    if (n == "filter") return parse_filter_block();
    if (n == "with") {
      auto s = make_stmt(StmtKind::With, next());
      while (cur().type != TokenType::BlockEnd) {
        if (!s->params.empty()) expect_op(",");
        s->params.push_back(expect_name());
        expect_op("=");
        s->defaults.push_back(parse_expression(true));
      }
      next();
      s->body = parse_body({"endwith"});
      next();
      expect_block_end();
      return s;
    }
    if (n == "generation") {
      auto s = make_stmt(StmtKind::Generation, next());
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      next();
      expect_block_end();
      return s;
    }
    if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) fail_at(t, std::string("'") + n + "' outside of a loop");
      auto s = make_stmt(n == "break" ? StmtKind::Break : StmtKind::Continue, next());
      expect_block_end();
      return s;
    }
    fail_at(t, std::string("Encountered unknown tag '") + n + "'");
  }

  StmtPtr parse_if() {
    auto s = make_stmt(StmtKind::If, next());
    while (true) {
      ExprPtr cond = parse_tuple(false, true, {}, false);
      expect_block_end();
      Body body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      const std::string tag = next().text;
      if (tag == "elif") continue;
      if (tag == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"});
        next();
      }
      expect_block_end();
      return s;
    }
  }

  void parse_assign_targets(Stmt& s, std::initializer_list<std::string_view> end_rules) {
    // Names separated by commas; a trailing comma makes a one-element tuple.
    while (true) {
      if (cur().type != TokenType::Name)
        fail_at(cur(), std::string("can't assign to '") + describe(cur()) + "'");
      const std::string& n = cur().text;
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" ||
          n == "None") {
        fail_at(cur(), std::string("can't assign to constant '") + n + "'");
      }
      s.targets.push_back(next().text);
      if (!skip_op(",")) break;
      s.tuple_target = true;
      bool end = cur().type == TokenType::BlockEnd || is_op("=");
      for (auto r : end_rules) end = end || is_name(r);
      if (end) break;
    }
  }

  StmtPtr parse_for() {
    auto s = make_stmt(StmtKind::For, next());
    parse_assign_targets(*s, {"in"});
    if (!skip_name("in"))
      fail_at(cur(), std::string("expected 'in', got '") + describe(cur()) + "'");
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) s->cond = parse_expression(true);
    if (is_name("recursive")) fail_at(cur(), "recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (next().text == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"});
      next();
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set() {
    const Token& at = next();
    auto s = make_stmt(StmtKind::Set, at);
    if (cur().type == TokenType::Name && peek().type == TokenType::Operator && peek().text == ".") {
      s->namespace_target = true;
      s->targets.push_back(next().text);
      next();
      s->name = expect_name();
    } else {
      parse_assign_targets(*s, {});
    }
    if (skip_op("=")) {
      s->expr = parse_tuple(false, true, {}, false);
      expect_block_end();
      return s;
    }
    if (s->namespace_target || s->tuple_target) fail_at(cur(), "expected '='");
    s->kind = StmtKind::SetBlock;
    if (is_op("|")) s->expr = parse_filter(nullptr);
    expect_block_end();
    s->body = parse_body({"endset"});
    next();
    expect_block_end();
    return s;
  }

  void parse_signature(Stmt& s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      if (is_op(")")) break;
      s.params.push_back(expect_name());
      if (skip_op("=")) {
        s.defaults.push_back(parse_expression(true));
      } else {
        if (!s.defaults.empty() && s.defaults.back()) {
          fail_at(cur(), "non-default argument follows default argument");
        }
        s.defaults.push_back(nullptr);
      }
    }
    next();
  }

  static void find_names(const Expr* e, Stmt& macro) {
    if (!e) return;
    if (e->kind == ExprKind::Name) {
      macro.uses_varargs = macro.uses_varargs || e->name == "varargs";
      macro.uses_kwargs = macro.uses_kwargs || e->name == "kwargs";
      macro.uses_caller = macro.uses_caller || e->name == "caller";
    }
    for (const auto& c : e->children) find_names(c.get(), macro);
    for (const auto& [k, v] : e->kwargs) find_names(v.get(), macro);
  }
  static void find_names(const Body& body, Stmt& macro) {
    for (const auto& s : body) {
      find_names(s->expr.get(), macro);
      find_names(s->cond.get(), macro);
      for (const auto& [c, b] : s->branches) {
        find_names(c.get(), macro);
        find_names(b, macro);
      }
      for (const auto& d : s->defaults) find_names(d.get(), macro);
      find_names(s->body, macro);
      find_names(s->else_body, macro);
    }
  }

  StmtPtr parse_macro() {
    auto s = make_stmt(StmtKind::Macro, next());
    s->name = expect_name();
    parse_signature(*s);
    expect_block_end();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"});
    find_names(s->body, *s);
    for (const auto& d : s->defaults) find_names(d.get(), *s);
    loop_depth_ = saved;
    next();
    expect_block_end();
    return s;
  }

  StmtPtr parse_call_block() {
    auto s = make_stmt(StmtKind::CallBlock, next());
    if (is_op("(")) parse_signature(*s);
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::Call) fail_at(cur(), "expected call");
    expect_block_end();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endcall"});
    loop_depth_ = saved;
    next();
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = make_stmt(StmtKind::FilterBlock, next());
    s->expr = parse_filter(nullptr, true);
    expect_block_end();
    s->body = parse_body({"endfilter"});
    next();
    expect_block_end();
    return s;
  }

  // ---- expressions -------------------------------------------------------------------------

  bool is_tuple_end(std::initializer_list<std::string_view> extra) const {
    if (cur().type == TokenType::VariableEnd || cur().type == TokenType::BlockEnd || is_op(")"))
      return true;
    for (auto e : extra) {
      if (is_name(e)) return true;
    }
    return false;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr,
                      std::initializer_list<std::string_view> extra, bool explicit_parens) {
    const Token& at = cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra)) break;
      items.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens)
        fail_at(cur(), std::string("Expected an expression, got '") + describe(cur()) + "'");
    }
    auto e = make(ExprKind::Tuple, at);
    e->children = std::move(items);
    return sized(std::move(e));
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      auto e = make(ExprKind::Cond, next());
      ExprPtr cond = parse_or();
      ExprPtr otherwise;
      if (skip_name("else")) otherwise = parse_condexpr();
      e->children.push_back(std::move(cond));
      e->children.push_back(std::move(expr));
      e->children.push_back(std::move(otherwise));
      expr = sized(std::move(e));
    }
    return expr;
  }

  ExprPtr binary(ExprKind kind, const Token& at, ExprPtr a, ExprPtr b, std::string op = {}) {
    auto e = make(kind, at);
    e->name = std::move(op);
    e->children.push_back(std::move(a));
    e->children.push_back(std::move(b));
    return sized(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const Token& at = next();
      left = binary(ExprKind::Or, at, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const Token& at = next();
      left = binary(ExprKind::And, at, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = make(ExprKind::Not, next());
      e->children.push_back(parse_not());
      return sized(std::move(e));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr first = parse_math1();
    ExprPtr e;
    while (true) {
      std::string op;
      if (cur().type == TokenType::Operator &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (skip_name("in")) {
        op = "in";
      } else if (is_name("not") && peek().type == TokenType::Name && peek().text == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!e) {
        e = make(ExprKind::Compare, at);
        e->children.push_back(std::move(first));
      }
      e->ops.push_back(op);
      e->children.push_back(parse_math1());
    }
    return e ? sized(std::move(e)) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = next();
      left = binary(ExprKind::Binary, at, std::move(left), parse_concat(), at.text);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const Token& at = next();
      left = binary(ExprKind::Binary, at, std::move(left), parse_math2(), "~");
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      left = binary(ExprKind::Binary, at, std::move(left), parse_pow(), at.text);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& at = next();
      left = binary(ExprKind::Binary, at, std::move(left), parse_unary(true), "**");
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto e = make(is_op("-") ? ExprKind::Neg : ExprKind::Pos, cur());
      next();
      e->children.push_back(parse_unary(false));
      node = sized(std::move(e));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = cur();
    if (t.type == TokenType::Name) {
      next();
      auto e = make(ExprKind::Const, t);
      if (t.text == "true" || t.text == "True") {
        e->value = Value::from_bool(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value::from_bool(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::none();
      } else {
        e->kind = ExprKind::Name;
        e->name = t.text;
      }
      return e;
    }
    if (t.type == TokenType::String) {
      auto e = make(ExprKind::Const, t);
      std::string s;
      while (cur().type == TokenType::String) s += next().text;
      e->value = Value::from_string(std::move(s));
      return e;
    }
    if (t.type == TokenType::Integer || t.type == TokenType::Float) {
      auto e = make(ExprKind::Const, t);
      e->value =
          t.type == TokenType::Integer ? Value::from_int(t.integer) : Value::from_float(t.number);
      next();
      return e;
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      auto e = make(ExprKind::List, next());
      while (!is_op("]")) {
        if (!e->children.empty()) expect_op(",");
        if (is_op("]")) break;
        e->children.push_back(parse_expression(true));
      }
      next();
      return sized(std::move(e));
    }
    if (is_op("{")) {
      auto e = make(ExprKind::Dict, next());
      while (!is_op("}")) {
        if (!e->children.empty()) expect_op(",");
        if (is_op("}")) break;
        e->children.push_back(parse_expression(true));
        expect_op(":");
        e->children.push_back(parse_expression(true));
      }
      next();
      return sized(std::move(e));
    }
    fail_at(t, std::string("unexpected '") + describe(t) + "'");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      DepthGuard guard(*this);
      if (is_op(".") || is_op("[")) {
        node = sized(parse_subscript(std::move(node)));
      } else if (is_op("(")) {
        node = sized(parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      DepthGuard guard(*this);
      if (is_op("|")) {
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        node = sized(parse_test(std::move(node)));
      } else if (is_op("(")) {
        node = sized(parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& at = next();
    if (at.text == ".") {
      const Token& t = cur();
      if (t.type == TokenType::Name) {
        auto e = make(ExprKind::Attr, t);
        e->name = next().text;
        e->children.push_back(std::move(node));
        return e;
      }
      if (t.type == TokenType::Integer) {
        auto e = make(ExprKind::Item, t);
        auto idx = make(ExprKind::Const, t);
        idx->value = Value::from_int(t.integer);
        next();
        e->children.push_back(std::move(node));
        e->children.push_back(std::move(idx));
        return e;
      }
      fail_at(t, "expected name or number");
    }
    auto e = make(ExprKind::Item, at);
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      if (is_op("]")) break;
      args.push_back(parse_subscribed());
    }
    next();
    e->children.push_back(std::move(node));
    if (args.size() == 1) {
      e->children.push_back(std::move(args[0]));
    } else {
      auto tuple = make(ExprKind::Tuple, at);
      tuple->children = std::move(args);
      e->children.push_back(sized(std::move(tuple)));
    }
    return e;
  }

  ExprPtr parse_subscribed() {
    const Token& at = cur();
    std::vector<ExprPtr> parts;
    if (skip_op(":")) {
      parts.push_back(nullptr);
    } else {
      ExprPtr node = parse_expression(true);
      if (!skip_op(":")) return node;
      parts.push_back(std::move(node));
    }
    if (is_op(":")) {
      parts.push_back(nullptr);
    } else if (!is_op("]") && !is_op(",")) {
      parts.push_back(parse_expression(true));
    } else {
      parts.push_back(nullptr);
    }
    if (skip_op(":")) {
      parts.push_back(!is_op("]") && !is_op(",") ? parse_expression(true) : nullptr);
    } else {
      parts.push_back(nullptr);
    }
    auto e = make(ExprKind::Slice, at);
    e->children = std::move(parts);
    return sized(std::move(e));
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**"))
        fail_at(cur(), "*args and **kwargs in calls are not supported");
      if (cur().type == TokenType::Name && peek().type == TokenType::Operator &&
          peek().text == "=") {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail_at(cur(), "positional argument follows keyword argument");
        e.children.push_back(parse_expression(true));
      }
    }
    next();
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(ExprKind::Call, cur());
    e->children.push_back(std::move(node));
    parse_call_args(*e);
    return e;
  }

  // `node` is null for filter blocks and `set` blocks, whose input is the rendered body.
  ExprPtr parse_filter(ExprPtr node, bool start_inline = false) {
    while (is_op("|") || start_inline) {
      DepthGuard guard(*this);
      if (!start_inline) next();
      start_inline = false;
      auto e = make(ExprKind::Filter, cur());
      e->name = expect_name();
      while (is_op(".")) {
        next();
        e->name.push_back('.');
        e->name += expect_name();
      }
      e->children.push_back(std::move(node));
      if (is_op("(")) parse_call_args(*e);
      node = sized(std::move(e));
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    auto e = make(ExprKind::Test, next());
    if (skip_name("not")) e->negated = true;
    e->name = expect_name();
    while (is_op(".")) {
      next();
      e->name.push_back('.');
      e->name += expect_name();
    }
    e->children.push_back(std::move(node));
    const Token& t = cur();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((t.type == TokenType::Name || t.type == TokenType::String ||
                t.type == TokenType::Integer || t.type == TokenType::Float || is_op("[") ||
                is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail_at(t, "You cannot chain multiple tests with is");
      e->children.push_back(parse_postfix(parse_primary()));
    }
    return e;
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Program parse_tokens(std::vector<Token> tokens) {
  return Parser(std::move(tokens)).run();
}

}  // namespace redhare::jinja

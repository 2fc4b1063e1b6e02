// Tests for `{{ … }}` expressions (include/drover/expression.h): finding,
// checking, rendering, conditions, the functions and the sandbox.
#include "drover/expression.h"

#include <doctest/doctest.h>

#include <cstring>
#include <iterator>
#include <random>

namespace drover {
namespace {

ExpressionContext Context() {
  ExpressionContext ctx;
  ctx.inputs = {{"source", "https://example.com/in.ogv"},
                {"convert", "no"},
                {"count", "12"},
                {"empty", ""},
                {"padded", "  Mixed Case  "}};
  ctx.tasks = {{"fetched", "/data/in.ogv"}};
  ctx.secrets = {{"TOKEN", "s3cr3t"}};
  ctx.job_id = "job-42";
  ctx.job_name = "convert";
  return ctx;
}

// Renders or returns the error message, so checks read as one line.
std::string Render(std::string_view text, const ExpressionLimits& limits = {}) {
  auto r = RenderTemplate(text, Context(), limits);
  if (!r.ok()) {
    CHECK(r.status().code() == Code::kInvalidArgument);
    return "error: " + r.status().message();
  }
  return *r;
}

std::string Cond(std::string_view text) {
  auto r = EvaluateCondition(text, Context());
  if (!r.ok()) return "error: " + r.status().message();
  return *r ? "true" : "false";
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

TEST_CASE("Expression.FindExpressionsSplitsTemplates") {
  auto parts = FindExpressions("a {{ inputs.x }} b {{y}}{{ '}}' }}");
  REQUIRE(parts.ok());
  REQUIRE(parts->size() == 3);
  CHECK((*parts)[0].offset == 2);
  CHECK((*parts)[0].source == "inputs.x");
  CHECK((*parts)[1].offset == 19);
  CHECK((*parts)[1].source == "y");
  CHECK((*parts)[2].source == "'}}'");  // braces in a string do not close

  auto nested = FindExpressions("{{ len({ {1}, 2 }) }}!");
  REQUIRE(nested.ok());
  REQUIRE(nested->size() == 1);
  CHECK((*nested)[0].source == "len({ {1}, 2 })");

  auto none = FindExpressions("plain text } { }}");
  REQUIRE(none.ok());
  CHECK(none->empty());

  auto bad = FindExpressions("ok {{ a }} then {{ broken");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() == "unterminated '{{' at offset 16");
}

TEST_CASE("Expression.CheckExpressionReportsLuaErrorsWithoutChunkName") {
  CHECK(CheckExpression("inputs.x == 'a' and not tasks.y").ok());
  CHECK(CheckExpression("inputs.x != 'a'").ok());
  Status s = CheckExpression("inputs.x +");
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(s.message() == "expression 'inputs.x +': unexpected symbol near <eof>");
  CHECK(CheckExpression("1 2").message() ==
        "expression '1 2': <eof> expected near '2'");
  CHECK(CheckExpression("   ").message() == "empty expression '{{ }}'");
  // Statements are not expressions.
  CHECK_FALSE(CheckExpression("1; os.exit()").ok());
  CHECK_FALSE(CheckExpression("x = 1").ok());
  // Long expressions are shortened in messages.
  std::string longexpr(200, 'a');
  longexpr += " +";
  CHECK(CheckExpression(longexpr).message().size() < 150);
  // Shortened on a character boundary, and on one line.
  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "\xc3\xa9";  // é
  std::string m = CheckExpression("'" + accents + "' +").message();
  CHECK(m.find("\xc3\xa9...'") != std::string::npos);
  CHECK(CheckExpression("1 +\n\n").message() ==
        "expression '1 +\\n\\n': unexpected symbol near <eof>");
  // Checking runs nothing: an endless loop compiles quickly.
  CHECK(CheckExpression("(function() while true do end end)()").ok());
}

TEST_CASE("Expression.CheckTemplateFlagsSecretsOutsideEnv") {
  CHECK(CheckTemplate("{{ secrets.TOKEN }}", true).ok());
  Status s = CheckTemplate("token={{ secrets.TOKEN }}", false);
  CHECK(s.message() ==
        "expression 'secrets.TOKEN': secrets can only be used in env values");
  CHECK_FALSE(CheckTemplate("{{ 'x' .. secrets.TOKEN }}", false).ok());
  CHECK_FALSE(CheckTemplate("{{ secrets['TOKEN'] }}", false).ok());
  CHECK_FALSE(CheckTemplate("{{ len(secrets) }}", false).ok());
  // A field or a string that happens to say "secrets" is not a reference.
  CHECK(CheckTemplate("{{ inputs.secrets }}", false).ok());
  CHECK(CheckTemplate("{{ 'secrets' }} {{ \"secrets.TOKEN\" }}", false).ok());
  CHECK(CheckTemplate("{{ [[secrets]] }}", false).ok());
  CHECK(CheckTemplate("{{ inputs.a -- secrets\n }}", false).ok());
  // _ENV would reach the globals by another name.
  CHECK_FALSE(CheckTemplate("{{ _ENV['sec' .. 'rets'] }}", true).ok());
  // Syntax errors and unterminated parts are found as well.
  CHECK_FALSE(CheckTemplate("{{ inputs. }}", true).ok());
  CHECK_FALSE(CheckTemplate("{{ inputs.x", true).ok());
  CHECK(CheckTemplate("no expressions at all", false).ok());
}

TEST_CASE("Expression.RenderTemplateReadsTheContext") {
  CHECK(Render("get {{ inputs.source }}") == "get https://example.com/in.ogv");
  CHECK(Render("{{ tasks.fetched }}") == "/data/in.ogv");
  CHECK(Render("{{ job.id }}/{{ job.name }}") == "job-42/convert");
  CHECK(Render("{{ secrets.TOKEN }}") == "s3cr3t");
  CHECK(Render("[{{ inputs.missing }}]") == "[]");  // nil renders as ""
  CHECK(Render("{{inputs.count}}{{inputs.count}}") == "1212");
  CHECK(Render("no templates") == "no templates");
  CHECK(Render("") == "");
  CHECK(Render("{{ inputs['source'] }}") == "https://example.com/in.ogv");
  CHECK(Render("{{ '{{' }} literal") == "{{ literal");
}

TEST_CASE("Expression.ValuesBecomeText") {
  CHECK(Render("{{ 1 + 2 }}") == "3");
  CHECK(Render("{{ 1.0 }}") == "1");
  CHECK(Render("{{ 10 / 4 }}") == "2.5");
  CHECK(Render("{{ 10 / 2 }}") == "5");  // a float with an integral value
  CHECK(Render("{{ -0.0 }}") == "0");
  CHECK(Render("{{ 2^53 }}") == "9007199254740992");
  CHECK(Render("{{ 1/3 }}") == "0.33333333333333");
  CHECK(Render("{{ 1e300 }}") == "1e+300");
  CHECK(Render("{{ 1e300 * 1e300 }}") == "inf");
  CHECK(Render("{{ true }}/{{ false }}/{{ nil }}") == "true/false/");
  CHECK(Render("{{ 'a' .. 'b' }}") == "ab");
  CHECK(Render("{{ {} }}") ==
        "error: expression '{}': the value is a table, not a string, "
        "number, boolean or nil");
  CHECK(Render("{{ len }}") ==
        "error: expression 'len': the value is a function, not a string, "
        "number, boolean or nil");
}

TEST_CASE("Expression.NotEqualIsAccepted") {
  CHECK(Render("{{ inputs.convert != 'no' }}") == "false");
  CHECK(Render("{{ inputs.convert != 'yes' }}") == "true");
  CHECK(Render("{{ inputs.convert ~= 'no' }}") == "false");
  // Only outside string literals.
  CHECK(Render("{{ 'a != b' }}") == "a != b");
  CHECK(Render("{{ \"x!=y\" != 'x!=y' }}") == "false");
  CHECK(Render("{{ [[!=]] }}") == "!=");
}

TEST_CASE("Expression.Functions") {
  CHECK(Render("{{ len(inputs.source) }}") == "26");
  CHECK(Render("{{ len({1, 2, 3}) }}") == "3");
  CHECK(Render("{{ len(inputs.missing) }}") == "0");
  CHECK(StartsWith(Render("{{ len(true) }}"),
                   "error: expression 'len(true)': "
                   "bad argument #1 to 'len'"));
  CHECK(Render("{{ lower(inputs.padded) }}") == "  mixed case  ");
  CHECK(Render("{{ upper(inputs.padded) }}") == "  MIXED CASE  ");
  CHECK(Render("{{ trim(inputs.padded) }}") == "Mixed Case");
  CHECK(Render("{{ trim('') }}") == "");
  CHECK(Render("{{ contains(inputs.source, 'example') }}") == "true");
  CHECK(Render("{{ contains(inputs.source, '.*') }}") == "false");  // plain
  CHECK(Render("{{ contains('abc', '') }}") == "true");
  CHECK(Render("{{ startswith(inputs.source, 'https://') }}") == "true");
  CHECK(Render("{{ startswith('ab', 'abc') }}") == "false");
  CHECK(Render("{{ endswith(inputs.source, '.ogv') }}") == "true");
  CHECK(Render("{{ endswith('ab', 'abc') }}") == "false");
  CHECK(Render("{{ tonumber(inputs.count) + 1 }}") == "13");
  CHECK(Render("{{ tonumber('0x10') }}") == "16");
  CHECK(Render("{{ tonumber('1.5') * 2 }}") == "3");
  CHECK(Render("{{ tonumber('twelve') == nil }}") == "true");
  CHECK(Render("{{ tonumber(7) }}") == "7");
  CHECK(Render("{{ tostring(1.5) .. tostring(true) .. tostring(nil) }}") ==
        "1.5truenil");
  CHECK(Render("{{ tostring(3.0) }}") == "3");
  CHECK(Render("{{ default(inputs.missing, 'fallback') }}") == "fallback");
  CHECK(Render("{{ default(inputs.empty, 'fallback') }}") == "fallback");
  CHECK(Render("{{ default(inputs.convert, 'fallback') }}") == "no");
  CHECK(Render("{{ default(false, 'x') }}") == "false");
  CHECK(StartsWith(Render("{{ upper(nil) }}"),
                   "error: expression 'upper(nil)': bad argument #1 to "
                   "'upper' (string expected, got nil)"));
  CHECK(StartsWith(Render("{{ split('a,b', ',') }}"), "error: "));
}

TEST_CASE("Expression.InputsAreStringsSoArithmeticNeedsTonumber") {
  CHECK(StartsWith(Render("{{ inputs.count + 1 }}"),
                   "error: expression 'inputs.count + 1': attempt to perform "
                   "arithmetic on a string value"));
  CHECK(Render("{{ inputs.count == '12' }}") == "true");
}

TEST_CASE("Expression.Conditions") {
  CHECK(Cond("") == "true");
  CHECK(Cond("   ") == "true");
  CHECK(Cond("{{ inputs.convert != 'no' }}") == "false");
  CHECK(Cond("{{ inputs.convert == 'no' }}") == "true");
  CHECK(Cond("  {{ inputs.convert == 'no' }}\n") == "true");
  CHECK(Cond("{{ inputs.missing }}") == "false");  // nil
  CHECK(Cond("{{ false }}") == "false");
  CHECK(Cond("{{ inputs.empty }}") == "true");  // a lone value: only nil/false
  CHECK(Cond("{{ 0 }}") == "true");
  CHECK(Cond("{{ len(tasks.fetched) > 0 and not (inputs.count == '0') }}") ==
        "true");
  // Anything else is rendered; "", "false" and "0" are false.
  CHECK(Cond("false") == "false");
  CHECK(Cond("0") == "false");
  CHECK(Cond("yes") == "true");
  CHECK(Cond("{{ inputs.empty }}{{ inputs.missing }} ") == "false");
  CHECK(Cond("{{ inputs.count }}0") == "true");
  CHECK(Cond("{{ 'fal' }}{{ 'se' }}") == "false");
  CHECK(StartsWith(Cond("{{ inputs.x.y }}"), "error: expression 'inputs.x.y'"));
  CHECK(StartsWith(Cond("{{ oops"), "error: unterminated"));
}

TEST_CASE("Expression.SandboxHasNoDangerousLibraries") {
  for (const char* expr : {"os.execute('touch /tmp/drover_pwned')",
                           "os.exit(1)",
                           "os.time()",
                           "io.open('/etc/passwd')",
                           "io.popen('id')",
                           "require('os')",
                           "load('return 1')()",
                           "loadstring('return 1')()",
                           "dofile('/etc/passwd')",
                           "loadfile('/etc/passwd')()",
                           "string.rep('x', 1e9)",
                           "('x'):rep(1e9)",
                           "print('hi')",
                           "getmetatable('').__index",
                           "setmetatable({}, {})",
                           "rawget(_G, 'os')",
                           "collectgarbage('count')",
                           "debug.getinfo(1)",
                           "package.loaded",
                           "coroutine.wrap(function() end)()",
                           "pcall(error)",
                           "error('x')",
                           "next({})",
                           "select('#')",
                           "utf8.char(72)",
                           "math.huge"}) {
    CAPTURE(expr);
    std::string out = Render(std::string("{{ ") + expr + " }}");
    CHECK(StartsWith(out, "error: "));
  }
  // Names that are simply absent read as nil.
  CHECK(Render("{{ os }}{{ io }}{{ _G }}{{ string }}") == "");
}

TEST_CASE("Expression.StepLimitStopsEndlessLoops") {
  CHECK(Render("{{ (function() while true do end end)() }}") ==
        "error: expression exceeded 100000 steps");
  CHECK(Render("{{ (function(f) return f(f) end)(function(f) return f(f) "
               "end) }}") == "error: expression exceeded 100000 steps");
  ExpressionLimits tight;
  tight.max_steps = 5000;
  CHECK(Render("{{ (function() for i = 1, 10000 do end end)() }}", tight) ==
        "error: expression exceeded 5000 steps");
  // The budget is per expression, not shared by a template's parts.
  const std::string part = "{{ (function() for i = 1, 15000 do end end)() }}";
  CHECK(Render(part + part + part + part) == "");
  // Non-tail recursion runs out of stack or memory, never the process.
  CHECK(StartsWith(
      Render("{{ (function(f) return f(f) + 1 end)(function(f) return f(f) + "
             "1 end) }}"),
      "error: "));
  auto cond = EvaluateCondition("{{ (function() while true do end end)() }}",
                                Context());
  CHECK(cond.status().message() == "expression exceeded 100000 steps");
}

TEST_CASE("Expression.MemoryLimitStopsBombs") {
  CHECK(Render("{{ (function() local s = 'x' while true do s = s .. s end "
               "end)() }}") == "error: expression exceeded its memory limit");
  CHECK(Render("{{ (function() local s = 'x' for i = 1, 10 do s = s .. s end "
               "local t = {} for i = 1, 1e7 do t[i] = s .. i end end)() }}") ==
        "error: expression exceeded its memory limit");
  ExpressionLimits small;
  small.max_memory = 64 << 10;
  CHECK(Render("{{ (function() local s = 'x' for i = 1, 20 do s = s .. s end "
               "return len(s) end)() }}",
               small) == "error: expression exceeded its memory limit");
  CHECK(Render("{{ (function() local s = 'x' for i = 1, 10 do s = s .. s end "
               "return len(s) end)() }}",
               small) == "1024");
  // Too little memory to even build the context is an error, not a crash.
  ExpressionLimits none;
  none.max_memory = 256;
  CHECK(Render("{{ 1 }}", none) ==
        "error: expression exceeded its memory "
        "limit");
}

TEST_CASE("Expression.ResultLimitCapsRenderedText") {
  ExpressionLimits limits;
  limits.max_result = 16;
  CHECK(Render("{{ inputs.source }}", limits) ==
        "error: rendered text exceeds 16 bytes");
  CHECK(Render(std::string(17, 'x'), limits) ==
        "error: rendered text exceeds 16 bytes");
  CHECK(Render("{{ inputs.count }}", limits) == "12");
}

TEST_CASE("Expression.ChunksAreTextOnly") {
  // A precompiled chunk starts with ESC; as an expression it cannot load.
  CHECK_FALSE(CheckExpression("\x1bLua\x54").ok());
  CHECK(StartsWith(Render("{{ \x1bLua }}"), "error: "));
}

TEST_CASE("Expression.RandomInputNeverCrashes") {
  // A cheap in-test fuzz: templates built from Lua-ish fragments.
  const char* kBits[] = {"{{",   "}}",      " ",        "'",   "\"",
                         "[[",   "]]",      "--",       "!=",  "inputs",
                         ".",    "secrets", "(",        ")",   "{",
                         "}",    "..",      "function", "end", "while true do",
                         "1",    "x",       "len",      "\\",  "\n",
                         "=",    "~",       "#",        "and", "not",
                         "\x00", "\xff"};
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> pick(0, std::size(kBits) - 1);
  std::uniform_int_distribution<int> count(1, 24);
  ExpressionLimits limits;
  limits.max_steps = 2000;
  for (int i = 0; i < 2000; ++i) {
    std::string text;
    for (int n = count(rng); n > 0; --n) {
      const char* bit = kBits[pick(rng)];
      text.append(bit, bit[0] == '\0' ? 1 : std::strlen(bit));
    }
    (void)CheckTemplate(text, i % 2 == 0);
    (void)RenderTemplate(text, Context(), limits);
    (void)EvaluateCondition(text, Context(), limits);
  }
}

}  // namespace
}  // namespace drover

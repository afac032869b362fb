// The paged KV cache: pool accounting, exhaustion in a ragged batch, fork (copy-on-write
// prefixes), ragged advance and chunked prefill against single calls, refcounts under 8
// threads, and a randomized model-based test of fork/grow/release/reset.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "attn/cache_pool.hpp"
#include "engine_fixture.hpp"

using attn::CachePool;
using attn::LayerConfig;
using attn::Session;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

// Sanitizer builds (ThreadSanitizer runs the kernels ~10x slower, and the tsan job runs every
// test) take shorter prompts and fewer operations; the cases keep their shape.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

attn::Engine make(const LayerConfig& c, const attn::Weights& w, const attn::RunOptions& run = {}) {
  auto e = attn::Engine::create(c, w, run);
  REQUIRE(e.ok());
  return e.value();
}

// A small layer: d_in = d_out = 32, 4 heads (2 kv heads when gqa), context 2048.
test::EngineCase small_case(bool gqa = false, std::int64_t window = 0) {
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 32, 32, 4, 1, 8, true, true, 3, 2048);
  c.config.window = window;
  if (gqa) {
    c.config.num_kv_heads = 2;
    auto w = attn::init_weights_like_torch(c.config, 3);
    REQUIRE(w.ok());
    c.weights = std::move(w.value());
  }
  return c;
}

// Rows of deterministic inputs: token t of stream `seed` is row t.
Tensor tokens(std::uint64_t seed, std::int64_t first, std::int64_t n, std::int64_t d = 32) {
  std::vector<float> v;
  for (std::int64_t t = first; t < first + n; ++t) {
    const auto r = test::random_floats(static_cast<std::size_t>(d), seed * 100003 + t);
    v.insert(v.end(), r.begin(), r.end());
  }
  return Tensor(Shape{n, d}, std::move(v));
}

std::vector<float> prefill(Session& s, const Tensor& x) {
  Tensor y(Shape{x.shape()[0], 32});
  const attn::Status st = s.prefill(x.view(), y.view());
  INFO(st.to_string());
  REQUIRE(st.ok());
  return y.values();
}

// Advances `s` alone by the rows of x: step() for one row, prefill() for more.
std::vector<float> alone(Session& s, const Tensor& x) {
  if (x.shape()[0] > 1) return prefill(s, x);
  Tensor y(Shape{1, 32});
  REQUIRE(s.step(x.view(), y.view()).ok());
  return y.values();
}

CachePool pool_of(const attn::Engine& e, std::size_t blocks) {
  auto probe = CachePool::create(e, 1 << 30);
  REQUIRE(probe.ok());
  auto p = CachePool::create(e, blocks * probe->block_bytes());
  REQUIRE(p.ok());
  return p.value();
}

Session session_in(const attn::Engine& e, CachePool& pool) {
  auto s = e.new_session(pool);
  REQUIRE(s.ok());
  return std::move(s.value());
}

}  // namespace

TEST_CASE("cache pool accounting: blocks as sessions grow, fork shares, release returns",
          "[cache_pool]") {
  const test::EngineCase c = small_case();
  const attn::Engine engine = make(c.config, c.weights);
  CachePool pool = pool_of(engine, 10);
  CHECK(pool.block_positions() == 128);
  CHECK(pool.block_bytes() == 2 * 32 * 128 * sizeof(float));
  CHECK(pool.capacity_bytes() == 10 * pool.block_bytes());
  CHECK(pool.used_bytes() == 0);
  Session a = session_in(engine, pool);
  CHECK(pool.used_bytes() == 0);
  prefill(a, tokens(1, 0, 1));
  CHECK(pool.used_bytes() == 1 * pool.block_bytes());
  prefill(a, tokens(1, 1, 127));
  CHECK(pool.used_bytes() == 1 * pool.block_bytes());
  prefill(a, tokens(1, 128, 73));  // 201 positions: 2 blocks
  CHECK(pool.used_bytes() == 2 * pool.block_bytes());
  CHECK(a.cache_bytes() == 2 * pool.block_bytes());
  {
    auto b = a.fork();
    REQUIRE(b.ok());
    CHECK(b->position() == 201);
    // The full block is shared, the partial one copied.
    CHECK(pool.used_bytes() == 3 * pool.block_bytes());
    prefill(b.value(), tokens(2, 201, 300));             // 501 positions: 4 blocks, 1 shared
    CHECK(pool.used_bytes() == 5 * pool.block_bytes());  // a: 2, b: 1 shared + 3
    CHECK(pool.peak_used_bytes() == 5 * pool.block_bytes());
  }  // destroying b returns its own blocks
  CHECK(pool.used_bytes() == 2 * pool.block_bytes());
  a.release();
  CHECK(a.position() == 0);
  CHECK(pool.used_bytes() == 0);
  CHECK(pool.peak_used_bytes() == 5 * pool.block_bytes());
  pool.reset_peak();
  CHECK(pool.peak_used_bytes() == 0);
  prefill(a, tokens(1, 0, 129));
  CHECK(pool.used_bytes() == 2 * pool.block_bytes());
  a.reset();
  CHECK(pool.used_bytes() == 0);

  // Errors: a budget below one block, a pool of another shape.
  auto tiny = CachePool::create(engine, pool.block_bytes() - 1);
  REQUIRE_FALSE(tiny.ok());
  CHECK_THAT(tiny.status().message(), Catch::Contains("below one block"));
  test::EngineCase other =
      test::make_case(Variant::kMultiHeadAttention, 32, 64, 4, 1, 8, true, true, 3, 2048);
  const attn::Engine wide = make(other.config, other.weights);
  auto foreign = wide.new_session(pool);
  REQUIRE_FALSE(foreign.ok());
  CHECK_THAT(foreign.status().message(), Catch::Contains("head_dim 8"));
}

TEST_CASE("pool exhaustion in the middle of a ragged batch leaves every session unchanged",
          "[cache_pool][errors]") {
  const test::EngineCase c = small_case();
  const attn::Engine engine = make(c.config, c.weights);
  CachePool pool = pool_of(engine, 5);
  Session a = session_in(engine, pool), b = session_in(engine, pool), d = session_in(engine, pool);
  prefill(a, tokens(1, 0, 100));
  prefill(b, tokens(2, 0, 120));
  prefill(d, tokens(3, 0, 128));
  CHECK(pool.used_bytes() == 3 * pool.block_bytes());
  // a needs 1 more block, b 1, d 1 + 1: 4 asked, 2 free.
  Session* all[] = {&a, &b, &d};
  const std::int64_t counts[] = {50, 1, 200};
  Tensor x = tokens(9, 0, 251);
  Tensor y(Shape{251, 32});
  std::fill(y.data(), y.data() + 251 * 32, 7.0f);
  const attn::Status st = engine.advance(all, counts, x.view(), y.view());
  CHECK(st.code() == attn::ErrorCode::kResourceExhausted);
  CHECK_THAT(st.message(), Catch::Contains(std::to_string(5 * pool.block_bytes()) + " bytes"));
  CHECK_THAT(st.message(),
             Catch::Contains(std::to_string(3 * pool.block_bytes()) + " bytes in use"));
  CHECK_THAT(st.message(),
             Catch::Contains(std::to_string(3 * pool.block_bytes()) + " bytes asked"));
  CHECK(a.position() == 100);
  CHECK(b.position() == 120);
  CHECK(d.position() == 128);
  CHECK(pool.used_bytes() == 3 * pool.block_bytes());
  // The sessions go on exactly as copies that never saw the failed call.
  CachePool fresh_pool = pool_of(engine, 8);
  Session a2 = session_in(engine, fresh_pool), d2 = session_in(engine, fresh_pool);
  prefill(a2, tokens(1, 0, 100));
  prefill(d2, tokens(3, 0, 128));
  Session* two[] = {&a, &d};
  const std::int64_t two_counts[] = {1, 100};
  Tensor y2(Shape{101, 32});
  REQUIRE(engine.advance(two, two_counts, tokens(8, 0, 101).view(), y2.view()).ok());
  std::vector<float> want = alone(a2, tokens(8, 0, 1));
  const std::vector<float> want_d = alone(d2, tokens(8, 1, 100));
  want.insert(want.end(), want_d.begin(), want_d.end());
  CHECK(y2.values() == want);
}

TEST_CASE("a fork's outputs equal those of an unshared copy", "[cache_pool][fork]") {
  const auto gqa = GENERATE(false, true);
  const auto prompt = GENERATE(100, 256, 300);
  CAPTURE(gqa, prompt);
  const test::EngineCase c = small_case(gqa);
  const attn::Engine engine = make(c.config, c.weights);
  CachePool pool = pool_of(engine, 40);
  Session parent = session_in(engine, pool);
  prefill(parent, tokens(1, 0, prompt));
  auto child = parent.fork();
  REQUIRE(child.ok());
  Session copy = session_in(engine, pool);
  prefill(copy, tokens(1, 0, prompt));
  Session parent_copy = session_in(engine, pool);
  prefill(parent_copy, tokens(1, 0, prompt));
  // The parent moves on with other tokens; child and copy get the same ones.
  CHECK(prefill(parent, tokens(5, prompt, 70)) == prefill(parent_copy, tokens(5, prompt, 70)));
  for (std::int64_t n : {1, 33, 1, 1, 200, 1}) {
    const Tensor x = tokens(6, child->position(), n);
    CHECK(alone(child.value(), x) == alone(copy, x));
  }
  // The child's writes did not reach the parent's blocks.
  const Tensor xp = tokens(9, parent.position(), 2);
  CHECK(alone(parent, xp) == alone(parent_copy, xp));
  // A fork of a fork, and of a private-pool session.
  auto grandchild = child->fork();
  REQUIRE(grandchild.ok());
  const Tensor x = tokens(7, child->position(), 5);
  CHECK(alone(grandchild.value(), x) == alone(child.value(), x));
  auto priv = engine.new_session();
  REQUIRE(priv.ok());
  prefill(priv.value(), tokens(1, 0, prompt));
  auto priv_fork = priv->fork();
  REQUIRE(priv_fork.ok());
  const Tensor x2 = tokens(8, prompt, 3);
  CHECK(alone(priv_fork.value(), x2) == alone(priv.value(), x2));
}

TEST_CASE("a ragged advance equals advancing each session alone, for any thread count",
          "[cache_pool][ragged]") {
  const auto gqa = GENERATE(false, true);
  const auto window = GENERATE(0, 300);
  CAPTURE(gqa, window);
  const test::EngineCase c = small_case(gqa, window);
  std::vector<float> first;
  // The serial backend, and each threaded one at 1 and 3 threads (none under TSan: libtbb and
  // libgomp are not instrumented, see engine_fixture.hpp).
  std::vector<std::pair<attn::Backend, int>> runs = {{attn::Backend::kSerial, 1}};
  for (attn::Backend b : test::threaded_backends()) {
    runs.emplace_back(b, 1);
    runs.emplace_back(b, 3);
  }
  for (const auto& [backend, threads] : runs) {
    attn::RunOptions run;
    run.backend = backend;
    run.threads = threads;
    const attn::Engine engine = make(c.config, c.weights, run);
    CachePool pool = pool_of(engine, 60);
    const std::vector<std::int64_t> prompts = kSanitized
                                                  ? std::vector<std::int64_t>{1, 330, 128, 40, 257}
                                                  : std::vector<std::int64_t>{1, 700, 128, 40, 513};
    const std::vector<std::int64_t> counts = {1, 37, 1, 200, 129};
    std::vector<Session> batched, single;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      batched.push_back(session_in(engine, pool));
      single.push_back(session_in(engine, pool));
      prefill(batched.back(), tokens(i, 0, prompts[i]));
      prefill(single.back(), tokens(i, 0, prompts[i]));
    }
    std::vector<Session*> ptrs;
    std::int64_t total = 0;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      ptrs.push_back(&batched[i]);
      total += counts[i];
    }
    std::vector<float> xs, want;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const Tensor x = tokens(50 + i, prompts[i], counts[i]);
      xs.insert(xs.end(), x.values().begin(), x.values().end());
      const std::vector<float> y = alone(single[i], x);
      want.insert(want.end(), y.begin(), y.end());
    }
    Tensor y(Shape{total, 32});
    attn::StepStats stats;
    REQUIRE(
        engine.advance(ptrs, counts, Tensor(Shape{total, 32}, xs).view(), y.view(), &stats).ok());
    CHECK(y.values() == want);
    for (std::size_t i = 0; i < prompts.size(); ++i)
      CHECK(batched[i].position() == prompts[i] + counts[i]);
    if (first.empty()) first = y.values();
    CHECK(y.values() == first);
  }
}

TEST_CASE("a prompt fed in chunks gives the outputs of one call", "[cache_pool][chunked]") {
  const auto gqa = GENERATE(false, true);
  const auto window = GENERATE(0, 200);
  CAPTURE(gqa, window);
  const test::EngineCase c = small_case(gqa, window);
  const attn::Engine engine = make(c.config, c.weights);
  const Tensor prompt = tokens(4, 0, 777);
  auto whole = engine.new_session();
  REQUIRE(whole.ok());
  const std::vector<float> want = prefill(whole.value(), prompt);
  // prefill() of any sizes (1 included): the flash kernel's rows do not depend on the
  // chunking (kv-blocks at fixed positions), so the bits are the same.
  auto chunked = engine.new_session();
  REQUIRE(chunked.ok());
  std::vector<float> got;
  std::int64_t at = 0;
  for (std::int64_t n : {1, 5, 122, 128, 1, 200, 320}) {
    const std::vector<float> y = prefill(chunked.value(), tokens(4, at, n));
    got.insert(got.end(), y.begin(), y.end());
    at += n;
  }
  REQUIRE(at == 777);
  CHECK(got == want);
  // Through advance(), a chunk of one token attends like step() (the decode kernels, which
  // reduce in another order): equal within rounding, not bit for bit.
  CachePool pool = pool_of(engine, 20);
  Session s = session_in(engine, pool);
  got.clear();
  at = 0;
  for (std::int64_t n : {300, 1, 1, 175, 300}) {
    Session* one[] = {&s};
    const std::int64_t count[] = {n};
    Tensor y(Shape{n, 32});
    REQUIRE(engine.advance(one, count, tokens(4, at, n).view(), y.view()).ok());
    got.insert(got.end(), y.values().begin(), y.values().end());
    at += n;
  }
  REQUIRE(at == 777);
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::abs(got[i] - want[i])));
  CHECK(worst <= 1e-6);
}

TEST_CASE("advance errors name the session and change nothing", "[cache_pool][errors]") {
  const test::EngineCase c = small_case();
  const attn::Engine engine = make(c.config, c.weights);
  CachePool pool = pool_of(engine, 4);
  Session a = session_in(engine, pool);
  prefill(a, tokens(1, 0, 10));
  Session* one[] = {&a};
  Tensor y(Shape{3, 32});
  const std::int64_t zero[] = {0};
  CHECK_THAT(engine.advance(one, zero, tokens(1, 0, 3).view(), y.view()).message(),
             Catch::Contains("new_tokens[0] = 0"));
  const std::int64_t three[] = {3}, two[] = {2, 1};
  CHECK_THAT(engine.advance(one, two, tokens(1, 0, 3).view(), y.view()).message(),
             Catch::Contains("1 sessions but 2"));
  CHECK_THAT(engine.advance(one, three, tokens(1, 0, 2).view(), y.view()).message(),
             Catch::Contains("[3, 32]"));
  const std::int64_t too_many[] = {2039};
  CHECK(engine.advance(one, too_many, tokens(1, 0, 2039).view(), Tensor(Shape{2039, 32}).view())
            .code() == attn::ErrorCode::kOutOfRange);
  CHECK(a.position() == 10);
  CHECK(pool.used_bytes() == pool.block_bytes());
}

TEST_CASE("fork, grow and release from 8 threads keep the counts right", "[cache_pool][threads]") {
  const test::EngineCase c = small_case();
  attn::RunOptions run;
  run.threads = 1;
  const attn::Engine engine = make(c.config, c.weights, run);
  CachePool pool = pool_of(engine, 200);
  Session root = session_in(engine, pool);
  prefill(root, tokens(1, 0, 300));  // 2 full blocks + 1 partial
  const std::size_t root_bytes = pool.used_bytes();
  // What every thread's forks must produce.
  auto ref_fork = root.fork();
  REQUIRE(ref_fork.ok());
  const std::vector<float> want = alone(ref_fork.value(), tokens(2, 300, 40));
  ref_fork->release();
  std::vector<int> bad(8, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 6; ++round) {
        auto f = root.fork();
        if (!f.ok()) {
          ++bad[t];
          continue;
        }
        Tensor y(Shape{40, 32});
        if (!f->prefill(tokens(2, 300, 40).view(), y.view()).ok() || y.values() != want) ++bad[t];
        auto g = f->fork();  // a fork of a fork, grown then dropped
        if (!g.ok()) {
          ++bad[t];
          continue;
        }
        Tensor y1(Shape{1, 32});
        if (!g->step(tokens(3, 340, 1).view(), y1.view()).ok()) ++bad[t];
        if (round % 2 == 0) f->release();
        g->reset();
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(bad == std::vector<int>(8, 0));
  CHECK(pool.used_bytes() == root_bytes);
  root.release();
  CHECK(pool.used_bytes() == 0);
}

TEST_CASE("randomized fork/grow/release/reset against a model of the pool", "[cache_pool][model]") {
  const auto seed = GENERATE(1, 2, 3);
  CAPTURE(seed);
  const test::EngineCase c = small_case(seed == 2);
  const attn::Engine engine = make(c.config, c.weights);
  constexpr std::size_t kBlocks = 24;
  CachePool pool = pool_of(engine, kBlocks);
  const std::size_t bp = 128;
  // The model: per session, its calls (stream, first token, count) and its blocks as ids of
  // the model (a fork shares the ids of full blocks and gets new ids for a partial one).
  struct Model {
    std::vector<std::tuple<std::uint64_t, std::int64_t, std::int64_t>> calls;
    std::vector<int> blocks;
    std::int64_t position = 0;
  };
  std::vector<Session> sessions;
  std::vector<Model> models;
  std::vector<std::vector<float>> outputs;
  int next_block = 0;
  auto used_blocks = [&] {
    std::set<int> ids;
    for (const Model& m : models) ids.insert(m.blocks.begin(), m.blocks.end());
    return ids.size();
  };
  std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  for (int op = 0; op < (kSanitized ? 50 : 150); ++op) {
    const std::size_t kind = sessions.empty() ? 0 : pick(10);
    if (kind == 0 && sessions.size() < 6) {  // new
      sessions.push_back(session_in(engine, pool));
      models.emplace_back();
      outputs.emplace_back();
    } else if (kind == 1) {  // fork
      const std::size_t i = pick(sessions.size());
      auto f = sessions[i].fork();
      Model m = models[i];
      const bool partial = m.position % static_cast<std::int64_t>(bp) != 0;
      if (partial) m.blocks.back() = next_block++;
      const bool fits = used_blocks() + (partial ? 1 : 0) <= kBlocks;
      REQUIRE(f.ok() == fits);
      if (f.ok()) {
        sessions.push_back(std::move(f.value()));
        models.push_back(m);
        outputs.push_back(outputs[i]);
      } else {
        CHECK(f.status().code() == attn::ErrorCode::kResourceExhausted);
      }
    } else if (kind == 2) {  // release or reset
      const std::size_t i = pick(sessions.size());
      if (pick(2) == 0)
        sessions[i].release();
      else
        sessions[i].reset();
      models[i] = Model{};
      outputs[i].clear();
    } else if (kind == 3) {  // destroy
      const std::size_t i = pick(sessions.size());
      sessions.erase(sessions.begin() + static_cast<std::ptrdiff_t>(i));
      models.erase(models.begin() + static_cast<std::ptrdiff_t>(i));
      outputs.erase(outputs.begin() + static_cast<std::ptrdiff_t>(i));
    } else {  // grow some sessions in one ragged call
      std::vector<std::size_t> chosen;
      for (std::size_t i = 0; i < sessions.size(); ++i)
        if (pick(2) == 0) chosen.push_back(i);
      if (chosen.empty()) continue;
      std::vector<Session*> ptrs;
      std::vector<std::int64_t> counts;
      std::vector<float> xs;
      std::size_t need = 0;
      std::vector<std::vector<int>> new_blocks(chosen.size());
      for (std::size_t k = 0; k < chosen.size(); ++k) {
        const std::size_t i = chosen[k];
        const std::int64_t n = pick(3) == 0 ? 1 + static_cast<std::int64_t>(pick(300)) : 1;
        const std::int64_t pos = models[i].position;
        if (pos + n > 2048) continue;
        ptrs.push_back(&sessions[i]);
        counts.push_back(n);
        const Tensor x = tokens(100 + i, pos, n);
        xs.insert(xs.end(), x.values().begin(), x.values().end());
        const std::size_t have = models[i].blocks.size();
        const std::size_t want = static_cast<std::size_t>(pos + n + 127) / bp;
        need += want - have;
      }
      if (ptrs.empty()) continue;
      std::int64_t total = 0;
      for (auto n : counts) total += n;
      Tensor y(Shape{total, 32});
      const attn::Status st =
          engine.advance(ptrs, counts, Tensor(Shape{total, 32}, xs).view(), y.view());
      const bool fits = used_blocks() + need <= kBlocks;
      INFO(st.to_string());
      REQUIRE(st.ok() == fits);
      if (!st.ok()) {
        CHECK(st.code() == attn::ErrorCode::kResourceExhausted);
      } else {
        std::int64_t row = 0;
        std::size_t k = 0;
        for (std::size_t i : chosen) {
          if (k >= ptrs.size() || ptrs[k] != &sessions[i]) continue;
          Model& m = models[i];
          m.calls.emplace_back(100 + i, m.position, counts[k]);
          m.position += counts[k];
          while (m.blocks.size() * bp < static_cast<std::size_t>(m.position))
            m.blocks.push_back(next_block++);
          outputs[i].insert(outputs[i].end(), y.data() + row * 32,
                            y.data() + (row + counts[k]) * 32);
          row += counts[k];
          ++k;
        }
      }
    }
    REQUIRE(pool.used_bytes() == used_blocks() * pool.block_bytes());
    for (std::size_t i = 0; i < sessions.size(); ++i)
      REQUIRE(sessions[i].position() == models[i].position);
  }
  // Each live session's outputs equal a replay of its calls on a fresh private session.
  for (std::size_t i = 0; i < sessions.size(); ++i) {
    auto replay = engine.new_session();
    REQUIRE(replay.ok());
    std::vector<float> want;
    for (const auto& [stream, first, n] : models[i].calls) {
      const std::vector<float> y = alone(replay.value(), tokens(stream, first, n));
      want.insert(want.end(), y.begin(), y.end());
    }
    CHECK(outputs[i] == want);
  }
}

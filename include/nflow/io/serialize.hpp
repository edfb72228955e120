// Saving and loading a model's parameters, through the same traversal the optimiser uses.
//
// Format (text, one file per model):
//   nflow-parameters 1
//   <number of parameters>
//   <name> <rows> <cols>
//   <rows * cols values, column-major, at full precision>
//   ...
// The architecture itself is code: build the same model, then load its parameters.
#pragma once

#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "nflow/detail/types.hpp"

namespace nflow {

/// Writes every parameter of `model` (names, shapes, values) to a stream.
template <class Model>
void save_parameters(Model& model, std::ostream& out) {
  using M = Matrix<typename Model::Scalar>;
  std::vector<std::string> names;
  std::vector<const M*> values;
  model.for_each_parameter([&](const std::string& name, M& p, M&) {
    names.push_back(name);
    values.push_back(&p);
  });
  out << "nflow-parameters 1\n" << names.size() << '\n';
  out.precision(std::numeric_limits<typename Model::Scalar>::max_digits10);
  for (std::size_t k = 0; k < names.size(); ++k) {
    const M& p = *values[k];
    out << names[k] << ' ' << p.rows() << ' ' << p.cols() << '\n';
    for (Index i = 0; i < p.size(); ++i)
      out << (i ? " " : "") << p.data()[i];
    out << '\n';
  }
}

/// Writes every parameter of `model` to the file at `path`.
template <class Model>
void save_parameters(Model& model, const std::string& path) {
  std::ofstream out(path);
  if (!out) detail::fail("save_parameters", "file '" + path + "'", "writable", "cannot open it");
  save_parameters(model, out);
  if (!out) detail::fail("save_parameters", "file '" + path + "'", "written", "a write error");
}

/**
 * \brief Reads parameters written by save_parameters into a model of the same architecture.
 *
 * Names and shapes must match the model's traversal one for one, and every value must be
 * finite; otherwise std::invalid_argument names the first mismatch and the model is left
 * unchanged (the whole file is read and checked before any parameter is assigned).
 */
template <class Model>
void load_parameters(Model& model, std::istream& in) {
  using M = Matrix<typename Model::Scalar>;
  const char* where = "load_parameters";
  std::string magic;
  int version = 0;
  std::size_t count = 0;
  if (!(in >> magic >> version) || magic != "nflow-parameters" || version != 1) {
    detail::fail(where, "header", "'nflow-parameters 1'", "'" + magic + "'");
  }
  if (!(in >> count)) detail::fail(where, "parameter count", "a number", "unreadable");

  // Read everything first.
  std::vector<std::string> names(count);
  std::vector<M> values(count);
  for (std::size_t k = 0; k < count; ++k) {
    Index rows = 0, cols = 0;
    if (!(in >> names[k] >> rows >> cols) || rows < 0 || cols < 0) {
      detail::fail(where, "entry " + std::to_string(k) + " header", "'name rows cols'",
                   "unreadable");
    }
    values[k].resize(rows, cols);
    for (Index i = 0; i < values[k].size(); ++i) {
      double v = 0;
      if (!(in >> v) || !std::isfinite(v)) {
        detail::fail(where, "value " + std::to_string(i) + " of '" + names[k] + "'",
                     "a finite number", "unreadable or non-finite");
      }
      values[k].data()[i] = typename Model::Scalar(v);
    }
  }

  // Check names and shapes against the model before assigning anything.
  std::size_t k = 0;
  model.for_each_parameter([&](const std::string& name, M& p, M&) {
    if (k >= count) detail::fail(where, "number of parameters", "more in the file", count);
    if (names[k] != name) detail::fail(where, "parameter " + std::to_string(k), name, names[k]);
    if (values[k].rows() != p.rows() || values[k].cols() != p.cols()) {
      detail::fail(where, "shape of '" + name + "'",
                   std::to_string(p.rows()) + "x" + std::to_string(p.cols()),
                   std::to_string(values[k].rows()) + "x" + std::to_string(values[k].cols()));
    }
    ++k;
  });
  if (k != count) detail::fail(where, "number of parameters", k, count);
  k = 0;
  model.for_each_parameter([&](const std::string&, M& p, M&) { p = values[k++]; });
}

/// Reads parameters from the file at `path` (see the stream overload).
template <class Model>
void load_parameters(Model& model, const std::string& path) {
  std::ifstream in(path);
  if (!in) detail::fail("load_parameters", "file '" + path + "'", "readable", "cannot open it");
  load_parameters(model, in);
}

}  // namespace nflow

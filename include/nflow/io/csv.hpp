// Reading and writing plain numeric CSV files as batches (one file row per column).
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nflow/detail/types.hpp"

namespace nflow {

/**
 * \brief Reads a comma-separated numeric file with no header into a D x N batch: each of the
 * N rows of the file becomes one column. Throws std::invalid_argument naming the file, line
 * and field when the file cannot be read, a field is not a number, or the rows differ in
 * length.
 */
template <class Scalar>
Matrix<Scalar> load_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) detail::fail("load_csv", "file '" + path + "'", "a readable file", "cannot open it");
  std::vector<double> values;
  Index cols = -1, rows = 0;
  std::string line;
  for (Index line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty() || line == "\r") continue;
    std::stringstream fields(line);
    std::string field;
    Index count = 0;
    while (std::getline(fields, field, ',')) {
      std::size_t used = 0;
      double v = 0;
      try {
        v = std::stod(field, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || field.find_first_not_of(" \t\r", used) != std::string::npos) {
        detail::fail("load_csv",
                     path + ":" + std::to_string(line_no) + " field " + std::to_string(count + 1),
                     "a number", "'" + field + "'");
      }
      values.push_back(v);
      ++count;
    }
    if (cols >= 0 && count != cols) {
      detail::fail("load_csv", path + ":" + std::to_string(line_no) + " field count", cols, count);
    }
    cols = count;
    ++rows;
  }
  if (rows == 0) detail::fail("load_csv", "file '" + path + "'", "at least one row", "none");
  Matrix<Scalar> out(cols, rows);
  for (Index j = 0; j < rows; ++j) {
    for (Index i = 0; i < cols; ++i)
      out(i, j) = Scalar(values[j * cols + i]);
  }
  return out;
}

/// Writes a D x N batch as N comma-separated rows of D numbers, at full precision.
template <class Derived>
void save_csv(const std::string& path, const Eigen::MatrixBase<Derived>& x) {
  std::ofstream out(path);
  if (!out) detail::fail("save_csv", "file '" + path + "'", "a writable file", "cannot open it");
  out.precision(17);
  for (Index j = 0; j < x.cols(); ++j) {
    for (Index i = 0; i < x.rows(); ++i)
      out << (i ? "," : "") << x(i, j);
    out << '\n';
  }
}

}  // namespace nflow

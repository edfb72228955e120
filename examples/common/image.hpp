// Small raster canvas for the examples' pictures: heat maps, point clouds, grey-scale tiles and
// text labels, written as PNG with stb_image_write.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace examples {

using Rgb = std::array<std::uint8_t, 3>;

/// Perceptually ordered colour map (dark blue through green to yellow) at t in [0, 1].
Rgb colormap(double t);

/// An RGB image, row-major, origin at the top left.
class Image {
 public:
  Image(int width, int height, Rgb background = {255, 255, 255})
      : m_w(width), m_h(height), m_px(static_cast<std::size_t>(width) * height * 3) {
    fill(background);
  }

  int width() const { return m_w; }
  int height() const { return m_h; }

  void fill(Rgb c) {
    for (std::size_t i = 0; i < m_px.size(); i += 3)
      std::copy(c.begin(), c.end(), &m_px[i]);
  }

  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= m_w || y >= m_h) return;
    std::copy(c.begin(), c.end(), &m_px[(static_cast<std::size_t>(y) * m_w + x) * 3]);
  }

  Rgb get(int x, int y) const {
    const auto* p = &m_px[(static_cast<std::size_t>(y) * m_w + x) * 3];
    return {p[0], p[1], p[2]};
  }

  void rect(int x0, int y0, int w, int h, Rgb c) {
    for (int y = y0; y < y0 + h; ++y)
      for (int x = x0; x < x0 + w; ++x)
        set(x, y, c);
  }

  /// Copies `other` with its top-left corner at (x0, y0).
  void paste(const Image& other, int x0, int y0) {
    for (int y = 0; y < other.height(); ++y)
      for (int x = 0; x < other.width(); ++x)
        set(x0 + x, y0 + y, other.get(x, y));
  }

  /// Draws text with its top-left corner at (x, y); `scale` multiplies the 7-pixel font.
  void text(int x, int y, const std::string& s, int scale = 2, Rgb c = {0, 0, 0});

  /// Writes the image as PNG; throws std::runtime_error if the file cannot be written.
  void save_png(const std::string& path) const;

 private:
  int m_w, m_h;
  std::vector<std::uint8_t> m_px;
};

/// Pixel size of `s` drawn by Image::text at `scale`.
int text_width(const std::string& s, int scale = 2);

/// A heat map of values on a grid (row 0 at the top), coloured linearly between lo and hi.
Image heatmap(const Eigen::MatrixXd& values, double lo, double hi);

/// A 2-D histogram of the points (columns of a 2 x N matrix) over [x0, x1] x [y0, y1] on a
/// width x height grid, shown as a heat map of the counts; y increases upwards.
Image histogram2d(const Eigen::MatrixXd& points, double x0, double x1, double y0, double y1,
                  int width, int height);

/// A grey-scale tile of an image given row by row with values in [lo, hi], each pixel drawn as
/// a `scale` x `scale` square (white = lo, black = hi).
Image grey_tile(const Eigen::VectorXd& pixels, int rows, int cols, double lo, double hi, int scale);

/// Lays out panels in a row with a title above each, and an overall caption on top.
Image panel_row(const std::vector<Image>& panels, const std::vector<std::string>& titles,
                const std::string& caption = "");

/// Stacks images vertically.
Image stack_rows(const std::vector<Image>& rows);

}  // namespace examples

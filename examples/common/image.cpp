#include "image.hpp"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>

namespace examples {

Rgb colormap(double t) {
  // Piecewise-linear through five anchor colours of a viridis-like ramp.
  static const double anchors[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 4.0;
  const int i = std::min(static_cast<int>(t), 3);
  const double f = t - i;
  Rgb c;
  for (int k = 0; k < 3; ++k) {
    c[k] = static_cast<std::uint8_t>(anchors[i][k] + f * (anchors[i + 1][k] - anchors[i][k]));
  }
  return c;
}

void Image::text(int x, int y, const std::string& s, int scale, Rgb c) {
  // stb_easy_font emits axis-aligned quads in font pixels; fill each one scaled. A quad takes
  // 64 bytes and a character at most 11 quads ('X'). The font silently drops the quads that do
  // not fit (an '8' missing one stroke reads as '9'), so the buffer has room for 16 per character.
  std::vector<char> buffer(s.size() * 16 * 64 + 64);
  std::string copy = s;
  const int quads =
      stb_easy_font_print(0, 0, copy.data(), nullptr, buffer.data(), (int)buffer.size());
  const float* v = reinterpret_cast<const float*>(buffer.data());
  for (int q = 0; q < quads; ++q) {
    const float* p = v + q * 16;  // 4 vertices of (x, y, z, rgba) = 16 floats
    const int qx0 = (int)std::lround(p[0] * scale), qy0 = (int)std::lround(p[1] * scale);
    const int qx1 = (int)std::lround(p[8] * scale), qy1 = (int)std::lround(p[9] * scale);
    rect(x + qx0, y + qy0, qx1 - qx0, qy1 - qy0, c);
  }
}

void Image::save_png(const std::string& path) const {
  if (!stbi_write_png(path.c_str(), m_w, m_h, 3, m_px.data(), m_w * 3)) {
    throw std::runtime_error("cannot write PNG file '" + path + "'");
  }
}

int text_width(const std::string& s, int scale) {
  std::string copy = s;
  return stb_easy_font_width(copy.data()) * scale;
}

Image heatmap(const Eigen::MatrixXd& values, double lo, double hi) {
  Image img((int)values.cols(), (int)values.rows());
  const double span = hi > lo ? hi - lo : 1.0;
  for (int y = 0; y < img.height(); ++y)
    for (int x = 0; x < img.width(); ++x)
      img.set(x, y, colormap((values(y, x) - lo) / span));
  return img;
}

Image histogram2d(const Eigen::MatrixXd& points, double x0, double x1, double y0, double y1,
                  int width, int height) {
  Eigen::MatrixXd counts = Eigen::MatrixXd::Zero(height, width);
  for (Eigen::Index j = 0; j < points.cols(); ++j) {
    const int cx = (int)std::floor((points(0, j) - x0) / (x1 - x0) * width);
    const int cy = (int)std::floor((y1 - points(1, j)) / (y1 - y0) * height);
    if (cx >= 0 && cx < width && cy >= 0 && cy < height) counts(cy, cx) += 1;
  }
  return heatmap(counts, 0.0, std::max(1.0, counts.maxCoeff()));
}

Image grey_tile(const Eigen::VectorXd& pixels, int rows, int cols, double lo, double hi,
                int scale) {
  Image img(cols * scale, rows * scale);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const double t = std::clamp((pixels(r * cols + c) - lo) / (hi - lo), 0.0, 1.0);
      const auto g = static_cast<std::uint8_t>(255.0 * (1.0 - t));
      img.rect(c * scale, r * scale, scale, scale, {g, g, g});
    }
  }
  return img;
}

Image panel_row(const std::vector<Image>& panels, const std::vector<std::string>& titles,
                const std::string& caption) {
  const int pad = 10, title_h = 24, caption_h = caption.empty() ? 0 : 30;
  int w = pad, h = 0;
  for (const Image& p : panels) {
    w += p.width() + pad;
    h = std::max(h, p.height());
  }
  w = std::max(w, text_width(caption) + 2 * pad);
  for (const std::string& t : titles)
    w = std::max(w, text_width(t) + 2 * pad);
  Image out(w, caption_h + title_h + h + pad);
  if (!caption.empty()) out.text(pad, 8, caption, 2);
  int x = pad;
  for (std::size_t i = 0; i < panels.size(); ++i) {
    if (i < titles.size()) out.text(x, caption_h + 6, titles[i], 2);
    out.paste(panels[i], x, caption_h + title_h);
    x += panels[i].width() + pad;
  }
  return out;
}

Image stack_rows(const std::vector<Image>& rows) {
  int w = 0, h = 0;
  for (const Image& r : rows) {
    w = std::max(w, r.width());
    h += r.height();
  }
  Image out(w, h);
  int y = 0;
  for (const Image& r : rows) {
    out.paste(r, 0, y);
    y += r.height();
  }
  return out;
}

}  // namespace examples
